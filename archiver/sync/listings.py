"""List each project's jobs and write the project and job rows; say which jobs' checkpoints to read."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

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


class ListingStep:
    """Read the job listings of the planned projects."""

    def __init__(self, ctx: Context, heard: Heard) -> None:
        self.ctx = ctx
        self.heard = heard

    def archive_listings(self, pool: ThreadPoolExecutor, targets: Targets) -> list[tuple[str, str]]:
        """List each project's jobs and archive project and job rows; return the jobs to fetch.

        Written in the order of their ids, not as they complete (one night, one answer), each as
        soon as it and every one before it are in: the writes go on while later listings are read.
        """
        to_fetch: list[tuple[str, str]] = []
        order = sorted(targets)
        window = self.ctx.options.concurrency * 2
        answers: dict[str, Future[Fetched[JobListing]]] = {}
        written = 0
        for project_id, answer in bounded(pool, self._fetch_listing, order, window, self.ctx.stopping):
            answers[project_id] = answer
            while written < len(order) and order[written] in answers:
                self._archive_listing(order[written], answers.pop(order[written]), targets, to_fetch)
                written += 1
        for project_id in sorted(answers):  # a stopped run: what came in, still in order
            self._archive_listing(project_id, answers[project_id], targets, to_fetch)
        return to_fetch

    def _archive_listing(
        self,
        project_id: str,
        answer: Future[Fetched[JobListing]],
        targets: Targets,
        to_fetch: list[tuple[str, str]],
    ) -> None:
        """Archive one project's listing; add the jobs whose checkpoints are to be read to `to_fetch`."""
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
            return
        if fetched.error is not None:
            self.ctx.write(self.ctx.keep, fetched.kept)
            if isinstance(fetched.error, NotFound):
                # Asked for by name: a typo or a project outside the key's teams, not news of a deletion.
                message = "no such project, or not visible to this API key (HTTP 404)"
                self.ctx.fail(JobError(message, project_id=project_id))
            else:
                self.ctx.fail(fetched.error.located(project_id=project_id, job_id=None))
            return
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
        try:
            skip = self.ctx.attempt(
                self._save_listing, listing, wanted is None and listing.complete, fetched.kept
            )
        except Unstorable as exc:  # its jobs are not read: the next run tries the project again
            self.ctx.fail(exc.located(project_id=project_id, job_id=None))
            self.ctx.write(self.ctx.keep, fetched.kept)
            return
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

    def _save_listing(
        self, connection: sa.Connection, listing: JobListing, complete: bool, kept: Kept | None
    ) -> set[str]:
        """Write a project's listing; return the ids of jobs whose checkpoints need no read.

        Only a complete listing of the whole project says which jobs are gone.
        """
        self.ctx.keep_listings(connection, (kept, listing))
        jobs = listing.jobs
        states = store.save_listing(connection, listing.project, jobs, self.ctx.now)
        recheck = self.ctx.options.recheck_after
        skip = {
            job.row["id"]
            for job in jobs
            if not self.ctx.options.full
            and store.can_skip(job, states.get(job.row["id"]), self.ctx.now, recheck)
        }
        if complete:  # judged once every listing is in (see `judge`)
            self.heard.jobs[listing.project["id"]] = {job.row["id"] for job in jobs}
            self.heard.withheld |= listing.refused  # quarantined: listed, so not gone
        self.ctx.record_progress(connection)
        return skip

    def _fetch_listing(self, project_id: str) -> Fetched[JobListing]:
        return fetch(
            lambda: self.ctx.client.list_jobs(project_id),
            lambda payload, link: normalize.job_listing(payload, project_id, link),
        )
