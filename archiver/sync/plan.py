"""Plan a run: which projects to list, and for each which jobs are wanted (None: all of them)."""

from __future__ import annotations

import sqlalchemy as sa

from archiver import normalize, store
from archiver.client import unreachable
from archiver.errors import FatalError, JobError, SuspectListing
from archiver.responses import Kept
from archiver.sync.context import Context
from archiver.sync.fetching import Fetched, fetch

Targets = dict[str, set[str] | None]


class Planner:
    """Read the organisation's project listing (or resolve a scope) into the projects to list."""

    def __init__(
        self,
        ctx: Context,
        first: Fetched[normalize.ProjectListing] | None,
        first_error: FatalError | None,
    ) -> None:
        self.ctx = ctx
        self._first = first  # the project listing, when read first to check the clock
        self._first_error = first_error

    def targets(self) -> Targets:
        """Project ids to list, each with the job ids wanted (None: all of them)."""
        ctx = self.ctx
        scope = ctx.options.scope
        if self._first_error is not None:
            raise self._first_error
        if scope.everything:
            fetched = self._first or fetch(ctx.client.list_projects, normalize.project_listing)
            if fetched.error is not None:  # malformed too: without the listing there is no run
                ctx.write(ctx.keep, fetched.kept)
                raise unreachable(fetched.error)
            listing = fetched.result()
            ctx.fail_incomplete(listing.rejected, listing.incomplete)
            listed = {project["id"] for project in listing.projects}
            if listing.complete:
                ctx.write(self._mark_missing_projects, listed, fetched.kept)
            else:
                ctx.write(ctx.keep, fetched.kept)
            return dict.fromkeys(listed)
        targets: Targets = dict.fromkeys(scope.project_ids)
        for job_id in scope.job_ids:
            project_id = self._project_of(job_id)
            if project_id is None:
                continue
            wanted = targets.setdefault(project_id, set())
            if wanted is not None:
                wanted.add(job_id)
        return targets

    def _mark_missing_projects(self, connection: sa.Connection, listed: set[str], kept: Kept | None) -> None:
        ctx = self.ctx
        ctx.keep(connection, kept)
        live = store.live_projects(connection)
        missing = sorted(live - listed)
        if reason := ctx.guard.refuses("projects", len(live), len(missing), len(listed)):
            ctx.fail(SuspectListing(f"the organisation's project listing: {reason}"))
            return
        ctx.report.counts.checkpoints_deleted += store.mark_deleted(connection, ctx.now, projects=missing)

    def _project_of(self, job_id: str) -> str | None:
        """Resolve a bare job id to its project with the search endpoint."""
        ctx = self.ctx
        fetched = fetch(
            lambda: ctx.client.search_jobs(job_id=job_id),
            lambda payload, link: normalize.project_of_job(payload, job_id, link),
        )
        ctx.write(ctx.keep, fetched.kept)
        if fetched.error is not None:
            ctx.fail(fetched.error.located(project_id=None, job_id=job_id))
            return None
        project_id = fetched.result()
        if project_id is None:
            ctx.fail(
                JobError("no such job in this organisation (the job search found nothing)", job_id=job_id)
            )
        return project_id
