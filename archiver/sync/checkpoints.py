"""Read every job's checkpoints and write whole jobs, in batches, from a single writer."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from archiver import normalize, store
from archiver.errors import AuthError, Contradiction, NotFound, SuspectListing, Unstorable
from archiver.normalize import CheckpointListing
from archiver.sync.context import Context
from archiver.sync.fetching import Fetched, bounded, fetch
from archiver.sync.judge import Heard

log = logging.getLogger("archiver.sync")


class CheckpointStep:
    """Read the checkpoint listings of the jobs to fetch."""

    def __init__(self, ctx: Context, heard: Heard) -> None:
        self.ctx = ctx
        self.heard = heard

    def archive_checkpoints(self, pool: ThreadPoolExecutor, jobs: list[tuple[str, str]]) -> None:
        """Fetch every job's checkpoints; write whole jobs in batches."""
        batch: list[Fetched[CheckpointListing]] = []
        rows = 0
        window = self.ctx.options.concurrency * 2
        for (project_id, job_id), future in bounded(
            pool, self._fetch_checkpoints, jobs, window, self.ctx.stopping
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

    def _fetch_checkpoints(self, target: tuple[str, str]) -> Fetched[CheckpointListing]:
        project_id, job_id = target
        return fetch(
            lambda: self.ctx.client.get_checkpoints(project_id, job_id),
            lambda payload, link: normalize.checkpoint_listing(
                payload, project_id, job_id, link, self.ctx.listed_jobs.get(job_id)
            ),
        )

    def _flush(self, batch: list[Fetched[CheckpointListing]]) -> None:
        """Write a batch of whole jobs; when the database refuses it, write each job alone and fail the refused."""
        if not batch:
            return
        try:
            self.ctx.attempt(self._save_checkpoints, batch)
            saved = batch
        except Unstorable:
            saved = [fetched for fetched in batch if self._save_alone(fetched)]
        for listing in (fetched.result() for fetched in saved):
            job = listing.job.row
            log.info(
                "project %s, job %s: %d checkpoints",
                listing.project_id,
                job["id"],
                len(listing.checkpoints),
                extra={
                    "event": "job",
                    "project_id": listing.project_id,
                    "job_id": job["id"],
                    "status": job["current_status"],
                    "checkpoints": len(listing.checkpoints),
                },
            )
        self.ctx.progress(len(batch))

    def _save_alone(self, fetched: Fetched[CheckpointListing]) -> bool:
        """Write one job's checkpoints in a transaction of its own; fail the job if the database refuses them."""
        try:
            self.ctx.attempt(self._save_checkpoints, [fetched])
            return True
        except Unstorable as exc:
            listing = fetched.result()
            self.ctx.fail(exc.located(project_id=listing.project_id, job_id=listing.job.row["id"]))
            self.ctx.write(self.ctx.keep, fetched.kept)
            return False

    def _save_checkpoints(self, connection: sa.Connection, batch: list[Fetched[CheckpointListing]]) -> None:
        listings = [fetched.result() for fetched in batch]
        self.ctx.keep_listings(
            connection, *((fetched.kept, listing) for fetched, listing in zip(batch, listings, strict=True))
        )
        writes, refused = store.save_checkpoint_listings(
            connection,
            listings,
            self.ctx.now,
            self.ctx.guard,
            defer=self.heard.checkpoints,
            later=self.heard.described,
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
