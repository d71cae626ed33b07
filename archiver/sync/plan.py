"""Plan a run: which projects to list, and for each which jobs are wanted (None: all of them)."""

from __future__ import annotations

from archiver import normalize
from archiver.client import unreachable
from archiver.errors import FatalError, JobError
from archiver.sync.context import Context
from archiver.sync.fetching import Fetched, fetch
from archiver.sync.judge import Heard

Targets = dict[str, set[str] | None]


class Planner:
    """Read the organisation's project listing (or resolve a scope) into the projects to list."""

    def __init__(
        self,
        ctx: Context,
        first: Fetched[normalize.ProjectListing] | None,
        first_error: FatalError | None,
        heard: Heard,
    ) -> None:
        self.ctx = ctx
        self.heard = heard
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
            ctx.fail_listing(listing)
            listed = {project["id"] for project in listing.projects}
            if listing.complete:
                self.heard.projects = set(listed)
                self.heard.withheld |= listing.refused  # quarantined: listed, so not gone
            ctx.write(ctx.keep_listings, (fetched.kept, listing))
            return dict.fromkeys(sorted(listed))
        targets: Targets = dict.fromkeys(scope.project_ids)
        for job_id in scope.job_ids:
            project_id = self._project_of(job_id)
            if project_id is None:
                continue
            wanted = targets.setdefault(project_id, set())
            if wanted is not None:
                wanted.add(job_id)
        return targets

    def _project_of(self, job_id: str) -> str | None:
        """Resolve a bare job id to its project with the search endpoint."""
        ctx = self.ctx
        fetched = fetch(
            lambda: ctx.client.search_jobs(job_id=job_id),
            lambda payload, link: normalize.project_of_job(payload, job_id, link),
        )
        if fetched.error is not None:
            ctx.write(ctx.keep, fetched.kept)
            ctx.fail(fetched.error.located(project_id=None, job_id=job_id))
            return None
        search = fetched.result()
        ctx.write(ctx.keep_listings, (fetched.kept, search))
        ctx.fail_listing(search)
        project_id = search.project_id
        if project_id is None:
            ctx.fail(
                JobError("no such job in this organisation (the job search found nothing)", job_id=job_id)
            )
        return project_id
