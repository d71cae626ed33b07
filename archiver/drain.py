"""Scopes draining away: a job or project that lost more than half of its checkpoints within a window.

The guard (see `store.DeletionGuard`) weighs one night; a bad API can also take a little less than
half a night, night after night (100, 51, 27, 14, 8, 5 checkpoints). This looks back over a window,
from what the archive already holds: of the checkpoints a live job held at some time in the window
(live now, or marked deleted within it), more than half marked deleted within it, and at least
`MASS`. A project is weighed the same way over all its jobs' checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.schema import checkpoints, training_jobs, training_projects

DEFAULT_DRAIN_WINDOW = timedelta(days=7)
MASS = 10  # as the guard's: fewer lost checkpoints than this are never a drain


@dataclass(frozen=True)
class Drain:
    """A job or project that lost more than half of the checkpoints it held within the window."""

    scope: str  # "job" or "project"
    id: str
    project_id: str
    lost: int
    held: int

    def __str__(self) -> str:
        where = (
            f"project {self.project_id}"
            if self.scope == "project"
            else f"project {self.project_id}, job {self.id}"
        )
        return f"{where}: {self.lost:,} of the {self.held:,} checkpoints it held were marked deleted"

    def as_json(self) -> dict[str, Any]:
        """The fields of a drain, for JSON output."""
        return {
            "scope": self.scope,
            "id": self.id,
            "project_id": self.project_id,
            "lost": self.lost,
            "held": self.held,
        }


def draining(connection: Connection, now: datetime, window: timedelta) -> list[Drain]:
    """The live jobs and projects that lost more than half of their checkpoints since `now - window`."""
    since = now - window
    if not _lost_enough(connection, since):
        return []
    c, j, p = checkpoints, training_jobs, training_projects
    lost = sa.func.sum(sa.case((c.c.deleted_at > since, 1), else_=0))
    held = sa.func.count()
    held_in_window = sa.or_(c.c.deleted_at.is_(None), c.c.deleted_at > since)
    found: list[Drain] = []
    jobs = (
        sa.select(j.c.id, j.c.training_project_id, lost, held)
        .select_from(c.join(j, j.c.id == c.c.training_job_id))
        .where(held_in_window, j.c.deleted_at.is_(None))
        .group_by(j.c.id, j.c.training_project_id)
        .having(sa.and_(lost * 2 > held, lost >= MASS))
    )
    found += [Drain("job", job, project, int(n), int(m)) for job, project, n, m in connection.execute(jobs)]
    projects = (
        sa.select(j.c.training_project_id, lost, held)
        .select_from(c.join(j, j.c.id == c.c.training_job_id).join(p, p.c.id == j.c.training_project_id))
        .where(held_in_window, p.c.deleted_at.is_(None))
        .group_by(j.c.training_project_id)
        .having(sa.and_(lost * 2 > held, lost >= MASS))
    )
    found += [
        Drain("project", project, project, int(n), int(m)) for project, n, m in connection.execute(projects)
    ]
    return sorted(found, key=lambda drain: (drain.project_id, drain.scope != "project", drain.id))


def _lost_enough(connection: Connection, since: datetime) -> bool:
    """Whether any job, or any project over its jobs, had `MASS` checkpoints marked deleted since `since`.

    Most nights none did: this reads only the checkpoints marked deleted in the window, so the
    weighing of every checkpoint a job or project held (a scan and two groupings of the whole
    table: 50-70 ms at 92,520 checkpoints, every night) is left to the nights that need it.
    """
    c, j = checkpoints, training_jobs
    query = (
        sa.select(j.c.training_project_id, sa.func.count())
        .select_from(c.join(j, j.c.id == c.c.training_job_id))
        .where(c.c.deleted_at > since)
        .group_by(j.c.training_project_id, c.c.training_job_id)
    )
    by_project: dict[str, int] = {}
    for project_id, lost in connection.execute(query):
        if lost >= MASS:
            return True
        by_project[project_id] = by_project.get(project_id, 0) + lost
    return any(lost >= MASS for lost in by_project.values())
