"""Read every job's checkpoints and write whole jobs, in batches, from a single writer."""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from archiver import facts, normalize, store, streamed, upkeep
from archiver.errors import AuthError, Contradiction, NotFound, SuspectListing, Unstorable
from archiver.normalize import CheckpointListing
from archiver.streamed import LargeListing
from archiver.sync.context import Context
from archiver.sync.fetching import Fetched, bounded, fetch
from archiver.sync.judge import Heard

log = logging.getLogger("archiver.sync")

# A batch is written early, when no answer is waiting, once it holds this share of its full size
# (`SyncOptions.batch_rows`): each batch costs some writes of its own (facts rows, progress, a commit).
IDLE_SHARE = 8

# A job's listing, held whole or, when large, read a piece at a time as it is written.
AnyListing = CheckpointListing | LargeListing


class CheckpointStep:
    """Read the checkpoint listings of the jobs to fetch."""

    def __init__(self, ctx: Context, heard: Heard) -> None:
        self.ctx = ctx
        self.heard = heard
        self._written = 0  # jobs whose batch was written
        self._ahead_at: int | None = None  # how many, before the large tables are analyzed ahead

    def archive_checkpoints(self, pool: ThreadPoolExecutor, jobs: list[tuple[str, str]]) -> None:
        """Fetch every job's checkpoints; write whole jobs in batches."""
        if self.ctx.options.refresh_facts:
            self._ahead_at = math.ceil(len(jobs) * upkeep.AHEAD_SHARE)
        try:
            self._archive_checkpoints(pool, jobs)
        finally:
            self.ctx.ahead.join()  # before anything else writes

    def _archive_checkpoints(self, pool: ThreadPoolExecutor, jobs: list[tuple[str, str]]) -> None:
        batch: list[Fetched[AnyListing]] = []
        rows = 0
        base = self.ctx.options.concurrency * 2

        def window() -> int:
            # As many more as the batch holds jobs: while the batch is written, as many are read
            # ahead, so the fetches go on; what waits to be written is never much more than two batches.
            return base + len(batch)

        def write_while_idle() -> None:
            # No answer is waiting: write what is in now, rather than once the batch is full. A run
            # paced by the API then has little left to write after its last answer, not up to a batch.
            nonlocal batch, rows
            if rows >= self.ctx.options.batch_rows // IDLE_SHARE:
                self._flush(batch)
                batch, rows = [], 0

        for (project_id, job_id), future in bounded(
            pool, self._fetch_checkpoints, jobs, window, self.ctx.stopping, idle=write_while_idle
        ):
            try:
                fetched = future.result()
            except AuthError:  # the key was refused midway (rotated?): keep what was read with it
                self._flush(batch)
                raise
            self.heard.answered(isinstance(fetched.error, NotFound))
            if isinstance(fetched.error, NotFound):
                # Its project's job listing had it a moment ago: that listing's next answer says whether it is gone.
                message = (
                    "the checkpoint listing answered 404, but the project's job listing has this job: "
                    "nothing was marked deleted"
                )
                self.ctx.fail(Contradiction(message, project_id=project_id, job_id=job_id))
            elif fetched.error is not None:
                self.ctx.fail(fetched.error.located(project_id=project_id, job_id=job_id))
            if fetched.error is not None:
                self.ctx.write(self.ctx.keep, fetched.kept)
                self.ctx.progress(1)
                continue
            listing = fetched.result()
            if isinstance(listing, LargeListing):  # written alone, a piece at a time
                self._flush(batch)
                batch, rows = [], 0
                self._flush([fetched])
                continue
            self.ctx.fail_listing(listing, project_id=project_id, job_id=job_id)
            if listing.duplicates:
                log.warning(
                    "project %s, job %s: checkpoint ids listed twice, the later entry kept: %s",
                    project_id,
                    job_id,
                    ", ".join(sorted(set(listing.duplicates))),
                )
            batch.append(fetched)
            rows += len(listing.checkpoints) + 1
            if rows >= self.ctx.options.batch_rows:
                self._flush(batch)
                batch, rows = [], 0
        self._flush(batch)

    def _fetch_checkpoints(self, target: tuple[str, str]) -> Fetched[AnyListing]:
        project_id, job_id = target
        listed_job = self.ctx.listed_jobs.get(job_id)
        return fetch(
            lambda: self.ctx.client.get_checkpoints(project_id, job_id),
            lambda payload, link: normalize.checkpoint_listing(payload, project_id, job_id, link, listed_job),
            lambda body, link: streamed.large_listing(body, project_id, job_id, link, listed_job),
        )

    def _flush(self, batch: list[Fetched[AnyListing]]) -> None:
        """Write a batch of whole jobs; when the database refuses it, write each job alone and fail the refused."""
        if not batch:
            return
        try:
            if self.ctx.attempt(self._save_checkpoints, batch):
                self.ctx.facts_fresh.update(fetched.result().job.row["id"] for fetched in batch)
            saved = batch
        except Unstorable:
            saved = [fetched for fetched in batch if self._save_alone(fetched)]
        finally:
            for listing in (fetched.result() for fetched in batch):
                if isinstance(listing, LargeListing):
                    listing.close()
        for listing in (fetched.result() for fetched in saved):
            if isinstance(listing, LargeListing):  # what it quarantined is known once it is read
                self.ctx.fail_listing(listing, project_id=listing.project_id, job_id=listing.job.row["id"])
            job = listing.job.row
            log.info(
                "project %s, job %s: %d checkpoints",
                listing.project_id,
                job["id"],
                listing.checkpoint_count,
                extra={
                    "event": "job",
                    "project_id": listing.project_id,
                    "job_id": job["id"],
                    "status": job["current_status"],
                    "checkpoints": listing.checkpoint_count,
                },
            )
        self.ctx.progress(len(batch))
        self._written += len(batch)
        due = self._ahead_at is not None and self._written >= self._ahead_at
        if due and (changed := self.ctx.changed_checkpoints()) > upkeep.MIN_CHANGED_ROWS:
            self.ctx.ahead.start(changed)  # while the last jobs are read and written

    def _save_alone(self, fetched: Fetched[AnyListing]) -> bool:
        """Write one job's checkpoints in a transaction of its own; fail the job if the database refuses them."""
        try:
            if self.ctx.attempt(self._save_checkpoints, [fetched]):
                self.ctx.facts_fresh.add(fetched.result().job.row["id"])
            return True
        except Unstorable as exc:
            listing = fetched.result()
            self.ctx.fail(exc.located(project_id=listing.project_id, job_id=listing.job.row["id"]))
            self.ctx.write(self.ctx.keep, fetched.kept)
            return False

    def _save_checkpoints(self, connection: sa.Connection, batch: list[Fetched[AnyListing]]) -> bool:
        """Write a batch; return whether its jobs' rows of the steady facts tables were rewritten with it."""
        listings = [fetched.result() for fetched in batch]
        large = [listing for listing in listings if isinstance(listing, LargeListing)]
        held = [listing for listing in listings if isinstance(listing, CheckpointListing)]
        now, guard, heard = self.ctx.now, self.ctx.guard, self.heard
        if large:  # alone in its batch (see `archive_checkpoints`)
            (listing,) = large
            writes, refused = store.save_large_listing(
                connection, listing, now, guard, defer=heard.checkpoints, later=heard.described
            )
        else:
            writes, refused = store.save_checkpoint_listings(
                connection, held, now, guard, defer=heard.checkpoints, later=heard.described
            )
        # After the write: a large listing knows what it quarantined once it has been read.
        self.ctx.keep_listings(
            connection, *((fetched.kept, listing) for fetched, listing in zip(batch, listings, strict=True))
        )
        self.ctx.report.add_writes(writes)
        projects = {listing.job.row["id"]: listing.project_id for listing in listings}
        for job_id, reason in refused.items():
            self.ctx.fail(
                SuspectListing(
                    f"the checkpoint listing: {reason}", project_id=projects[job_id], job_id=job_id
                )
            )
        self.ctx.report.counts.jobs_fetched += len(listings)
        self.ctx.record_progress(connection)
        upkeep.count_now(connection)  # before a later `ANALYZE` ahead of the run's end, not after it
        # Here, on the writer, while the fetches go on, rather than all at the run's end.
        jobs = [listing.job.row["id"] for listing in listings]
        return self.ctx.options.refresh_facts and facts.rewrite_written(connection, jobs)
