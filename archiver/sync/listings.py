"""List each project's jobs and write the project and job rows; say which jobs' checkpoints to read."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from archiver import normalize, store
from archiver.errors import Contradiction, JobError, NotFound, Unstorable
from archiver.normalize import JobListing
from archiver.responses import Kept
from archiver.sync.context import Context
from archiver.sync.fetching import Fetched, bounded, fetch
from archiver.sync.judge import Heard
from archiver.sync.plan import Targets

log = logging.getLogger("archiver.sync")


# Listings written in one transaction at most: those that came in while the writer was busy.
LISTINGS_A_WRITE = 16


@dataclass
class _Ready:
    """A listing to write: its project, the jobs it names, whether it says which are gone, its response."""

    project_id: str
    listing: JobListing
    complete: bool
    kept: Kept | None


class ListingStep:
    """Read the job listings of the planned projects."""

    def __init__(self, ctx: Context, heard: Heard) -> None:
        self.ctx = ctx
        self.heard = heard

    def archive_listings(self, pool: ThreadPoolExecutor, targets: Targets) -> list[tuple[str, str]]:
        """List each project's jobs and archive project and job rows; return the jobs to fetch.

        Written in the order of their ids, not as they complete (one night, one answer), each as
        soon as it and every one before it are in: the writes go on while later listings are read.
        Those that came in while the last write went on are written together, in one transaction.
        """
        to_fetch: list[tuple[str, str]] = []
        order = sorted(targets)
        window = self.ctx.options.concurrency * 2
        answers: dict[str, Future[Fetched[JobListing]]] = {}
        ready: list[tuple[str, Future[Fetched[JobListing]]]] = []
        written = 0

        def write_ready() -> None:  # when no other answer is in yet: nothing is kept waiting
            if ready:
                self._archive(ready, targets, to_fetch)
                ready.clear()

        steps = bounded(pool, self._fetch_listing, order, window, self.ctx.stopping, idle=write_ready)
        for project_id, answer in steps:
            answers[project_id] = answer
            while written < len(order) and order[written] in answers:
                ready.append((order[written], answers.pop(order[written])))
                written += 1
            if len(ready) >= LISTINGS_A_WRITE:
                write_ready()
        write_ready()
        for project_id in sorted(answers):  # a stopped run: what came in, still in order
            self._archive([(project_id, answers[project_id])], targets, to_fetch)
        return to_fetch

    def _archive(
        self,
        answers: list[tuple[str, Future[Fetched[JobListing]]]],
        targets: Targets,
        to_fetch: list[tuple[str, str]],
    ) -> None:
        """Archive projects' listings, in one transaction if the database takes them all; else one at a time."""
        ready = [r for project_id, answer in answers if (r := self._ready(project_id, answer, targets))]
        if len(ready) > 1:
            try:
                skips = self.ctx.attempt(self._save_listings, ready)
            except Unstorable:  # one of them is refused: each on its own, so that only its project fails
                pass
            else:
                for each, skip in zip(ready, skips, strict=True):
                    self._saved(each, skip, to_fetch)
                return
        for each in ready:
            try:
                (skip,) = self.ctx.attempt(self._save_listings, [each])
            except Unstorable as exc:  # its jobs are not read: the next run tries the project again
                self.ctx.fail(exc.located(project_id=each.project_id, job_id=None))
                self.ctx.write(self.ctx.keep, each.kept)
                continue
            self._saved(each, skip, to_fetch)

    def _ready(self, project_id: str, answer: Future[Fetched[JobListing]], targets: Targets) -> _Ready | None:
        """One project's listing as it is to be written; None when there is none (its failure is recorded)."""
        fetched = answer.result()
        self.heard.answered(isinstance(fetched.error, NotFound))
        if isinstance(fetched.error, NotFound) and self.ctx.options.scope.everything:
            # The project listing had it a moment ago: its next listing says whether it is gone.
            message = (
                "the job listing answered 404, but the project listing has this project: "
                "nothing was marked deleted"
            )
            self.ctx.fail(Contradiction(message, project_id=project_id))
            self.ctx.write(self.ctx.keep, fetched.kept)
            return None
        if fetched.error is not None:
            self.ctx.write(self.ctx.keep, fetched.kept)
            if isinstance(fetched.error, NotFound):
                # Asked for by name: a typo or a project outside the key's teams, not news of a deletion.
                message = "no such project, or not visible to this API key (HTTP 404)"
                self.ctx.fail(JobError(message, project_id=project_id))
            else:
                self.ctx.fail(fetched.error.located(project_id=project_id, job_id=None))
            return None
        listing = fetched.result()
        wanted = targets[project_id]
        if wanted is not None:
            listing.jobs = [job for job in listing.jobs if job.row["id"] in wanted]
            # Asked for some jobs: another job's broken entry is none of this run's business.
            listing.rejected = [r for r in listing.rejected if r.entry_id is None or r.entry_id in wanted]
            for job_id in sorted(wanted - {job.row["id"] for job in listing.jobs} - listing.refused):
                self.ctx.fail(
                    JobError("the job is not in its project's job list", project_id=project_id, job_id=job_id)
                )
        self.ctx.fail_listing(listing)
        self.ctx.listed_jobs.update((job.row["id"], job) for job in listing.jobs)
        return _Ready(project_id, listing, wanted is None and listing.complete, fetched.kept)

    def _save_listings(self, connection: sa.Connection, ready: list[_Ready]) -> list[set[str]]:
        """Write projects' listings; return, for each, the ids of jobs whose checkpoints need no read."""
        self.ctx.keep_listings(connection, *((each.kept, each.listing) for each in ready))
        written = [(each.listing.project, each.listing.jobs) for each in ready]
        states = store.save_listings(connection, written, self.ctx.now)
        recheck = self.ctx.options.recheck_after
        self.ctx.record_progress(connection)
        if self.ctx.options.full:
            return [set() for _ in ready]
        return [
            {
                job.row["id"]
                for job in each.listing.jobs
                if store.can_skip(job, states.get(job.row["id"]), self.ctx.now, recheck)
            }
            for each in ready
        ]

    def _saved(self, each: _Ready, skip: set[str], to_fetch: list[tuple[str, str]]) -> None:
        """Count a written listing, and add the jobs whose checkpoints are to be read to `to_fetch`."""
        listing, project_id = each.listing, each.project_id
        if each.complete:  # judged once every listing is in (see `judge`); only what was written counts
            self.heard.jobs[project_id] = {job.row["id"] for job in listing.jobs}
            self.heard.withheld |= listing.refused  # quarantined: listed, so not gone
        jobs = listing.jobs
        self.ctx.report.counts.projects += 1
        self.ctx.report.counts.jobs += len(jobs)
        self.ctx.report.counts.jobs_skipped += len(skip)
        self.ctx.progress(len(skip))
        to_fetch.extend((project_id, job.row["id"]) for job in jobs if job.row["id"] not in skip)
        log.info(
            "project %s: %d jobs listed, %d unchanged since their last read",
            project_id,
            len(jobs),
            len(skip),
            extra={
                "event": "project",
                "project_id": project_id,
                "jobs": len(jobs),
                "jobs_skipped": len(skip),
            },
        )

    def _fetch_listing(self, project_id: str) -> Fetched[JobListing]:
        return fetch(
            lambda: self.ctx.client.list_jobs(project_id),
            lambda payload, link: normalize.job_listing(payload, project_id, link),
        )
