"""Judge deletions once every listing of the run is in: what vanished, what it would lose, and whether to believe it.

Listings only say what they spoke for (`Heard`); nothing is marked deleted while they come in.
Judged after all of them, a job listed under a new project has already moved there (its
`training_project_id` is a new version), so it is never taken for deleted, whichever project's
listing completed first. The guard weighs what would be lost: the live jobs and checkpoints
beneath vanished projects, the live checkpoints beneath vanished jobs (see `store.DeletionGuard`).
A 404 never marks anything by itself: the parent's listing, this same run, named what answered
it (a contradiction); the parent's next listing says whether it is gone. Most listings answering
404 is an outage: nothing is marked deleted that run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from archiver import drain, durations, store
from archiver.errors import Outage, SuspectListing
from archiver.sync.context import Context

log = logging.getLogger("archiver.sync")

# At least this many listings answering 404, and more than half of them, make an outage.
OUTAGE_MIN = 3


@dataclass
class Heard:
    """What the run's listings spoke for: the ids each complete listing named, and how many answered 404.

    A listing speaks only for the ids it names and, when complete, for the absence of the rest;
    ids it refuses to speak for (`withheld`: an entry it could not read) are never judged gone.
    """

    projects: set[str] | None = None  # a complete, unscoped project listing's ids (None: no such listing)
    jobs: dict[str, set[str]] = field(default_factory=dict)  # project -> job ids its complete listing named
    withheld: set[str] = field(default_factory=set)  # ids a listing named but could not read
    # job -> the checkpoints its complete listing no longer has
    checkpoints: dict[str, store.Vanished] = field(default_factory=dict)
    # instance types the checkpoint responses described, written once every response is in
    described: store.Described = field(default_factory=list)
    listings: int = 0  # job and checkpoint listings answered, whatever the answer
    not_found: int = 0  # of them, those that answered 404

    def answered(self, not_found: bool) -> None:
        """Count a job or checkpoint listing's answer."""
        self.listings += 1
        self.not_found += not_found

    @property
    def outage(self) -> bool:
        """Whether so many listings answered 404 that the API, not the organisation, is at fault."""
        return self.not_found >= OUTAGE_MIN and self.not_found * 2 > self.listings


def judge(ctx: Context, heard: Heard) -> None:
    """Mark deleted what the run's complete listings no longer have, unless it looks like a bad response.

    First the instance types the checkpoint responses described, in the order of their jobs' ids.
    """
    ctx.write(store.save_described, heard.described, ctx.now)
    if heard.outage:
        message = (
            f"{heard.not_found} of {heard.listings} listings answered 404: taking it for an outage of the API, "
            "nothing was marked deleted this run"
        )
        ctx.fail(Outage(message))
        # What was deferred stays unmarked; its jobs count as unread, so the next run reads them again.
        ctx.report.outage = True
        return
    ctx.write(_judge, ctx, heard)


def _judge(connection: sa.Connection, ctx: Context, heard: Heard) -> None:
    deleted = 0
    if heard.projects is not None:
        deleted += _judge_projects(connection, ctx, heard.projects | heard.withheld)
    live = store.live_jobs(connection, sorted(heard.jobs))
    for project_id in sorted(heard.jobs):
        deleted += _judge_jobs(
            connection, ctx, project_id, live[project_id], heard.jobs[project_id] | heard.withheld
        )
    deleted += store.mark_vanished(connection, heard.checkpoints, ctx.now)
    ctx.report.counts.checkpoints_deleted += deleted
    ctx.record_progress(connection)


def look_back(ctx: Context) -> None:
    """Warn of each job or project that lost more than half of its checkpoints within --drain-window."""
    window = ctx.options.drain_window
    with ctx.engine.connect() as connection:
        found = drain.draining(connection, ctx.now, window)
    ctx.report.draining = found
    for each in found:
        log.warning(
            "draining: %s within %s (--drain-window); if that is not what happened, look at the API's answers",
            each,
            durations.describe(window.total_seconds()),
            extra={
                "event": "drain",
                "project_id": each.project_id,
                "job_id": each.id if each.scope == "job" else None,
            },
        )


def _judge_projects(connection: sa.Connection, ctx: Context, listed: set[str]) -> int:
    live = store.live_projects(connection)
    missing = sorted(live - listed)
    if not missing:
        return 0
    jobs = sorted(set().union(*store.live_jobs(connection, missing).values()))
    loss = store.Loss(
        "projects",
        len(live),
        len(missing),
        len(listed),
        jobs=len(jobs),
        checkpoints=store.live_checkpoint_count(connection, jobs),
        live_checkpoints=store.live_checkpoint_count(connection),
    )
    if reason := ctx.guard.refuses(loss):
        ctx.fail(SuspectListing(f"the project listing {reason}"))
        return 0
    return store.mark_deleted(connection, ctx.now, projects=missing)


def _judge_jobs(
    connection: sa.Connection, ctx: Context, project_id: str, live: set[str], listed: set[str]
) -> int:
    missing = sorted(live - listed)
    if not missing:
        return 0
    loss = store.Loss(
        "jobs",
        len(live),
        len(missing),
        len(listed),
        checkpoints=store.live_checkpoint_count(connection, missing),
        live_checkpoints=store.live_checkpoint_count(connection, sorted(live)),
    )
    if reason := ctx.guard.refuses(loss):
        ctx.fail(SuspectListing(f"the job listing {reason}", project_id=project_id))
        return 0
    return store.mark_deleted(connection, ctx.now, jobs=missing)
