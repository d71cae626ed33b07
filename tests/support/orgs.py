"""A fake organisation archived over two nights, for the view, query and docs tests.

Night 1 archives everything. During day 2 one checkpoint is deleted, a running job finishes,
and the newest project is deleted; night 2 (a --full run) notices. `ArchivedOrg.jobs` keeps what the API served
each night, so tests compute their expectations from the API's data, not from SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from archiver import migrate
from archiver.fake_api import TERMINAL_STATUSES, FakeBaseten, OrgSpec
from archiver.sync import SyncOptions

from .fakes import sync

SPEC = OrgSpec(seed=7, projects=3, jobs_per_project=4, checkpoints_per_job=5)
# Half past noon UTC is already the next day east of UTC+11: day boundaries must be UTC ones.
NIGHTS = (datetime(2026, 6, 1, 12, 30, tzinfo=UTC), datetime(2026, 6, 3, 12, 30, tzinfo=UTC))


@dataclass
class Served:
    """One job as the API served it: its project, the job, its checkpoints."""

    project: dict[str, Any]
    job: dict[str, Any]
    checkpoints: list[dict[str, Any]]


@dataclass
class ArchivedOrg:
    """The archived organisation and what happened to it."""

    fake: FakeBaseten
    jobs: dict[str, Served] = field(default_factory=dict)  # the newest view of every job ever served
    first_night: dict[str, Served] = field(default_factory=dict)  # what night 1 served
    deleted_checkpoint: tuple[str, str] = ("", "")
    finished_job: str = ""
    deleted_project: str = ""

    def checkpoint_deleted_at(self, job_id: str, checkpoint_id: str) -> datetime | None:
        gone = (job_id, checkpoint_id) == self.deleted_checkpoint
        return NIGHTS[1] if gone or self.jobs[job_id].project["id"] == self.deleted_project else None


def _serve_all(fake: FakeBaseten) -> dict[str, Served]:
    return {
        job_id: Served(
            fake.project(fake.job(job_id)["training_project_id"]), fake.job(job_id), fake.checkpoints(job_id)
        )
        for job_id in fake.job_ids()
    }


def archive_org(engine: Engine) -> ArchivedOrg:
    """Archive SPEC over two nights into `engine` (an empty database)."""
    migrate.upgrade(engine)
    fake = FakeBaseten(SPEC)
    org = ArchivedOrg(fake)
    sync(engine, fake, clock=lambda: NIGHTS[0])
    before = org.first_night = _serve_all(fake)
    org.deleted_project = fake.project_ids()[-1]
    kept = [j for j in fake.job_ids() if before[j].project["id"] != org.deleted_project]
    org.finished_job = next(j for j in kept if before[j].job["current_status"] not in TERMINAL_STATUSES)
    shrinking = next(j for j in kept if j != org.finished_job and len(before[j].checkpoints) >= 2)
    org.deleted_checkpoint = (shrinking, before[shrinking].checkpoints[0]["checkpoint_id"])
    fake.delete_checkpoint(*org.deleted_checkpoint)
    fake.set_job(org.finished_job, current_status="TRAINING_JOB_COMPLETED")
    fake.delete_project(org.deleted_project)
    report = sync(engine, fake, SyncOptions(full=True), clock=lambda: NIGHTS[1])
    assert report.exit_code == 0, report.summary()
    org.jobs = {**before, **_serve_all(fake)}
    # The deleted checkpoint is gone from the API but stays in the archive, as it last was.
    job_id, checkpoint_id = org.deleted_checkpoint
    old = next(c for c in before[job_id].checkpoints if c["checkpoint_id"] == checkpoint_id)
    org.jobs[job_id].checkpoints.insert(0, old)
    return org
