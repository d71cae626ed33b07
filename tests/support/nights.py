"""Nights of an organisation that changes, and what the API showed each night, for the history tests."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from archiver import query
from archiver.fake_api import FakeBaseten, OrgSpec, Response
from archiver.sync import SyncOptions, SyncReport

from .fakes import sync

NIGHTS = tuple(datetime(2026, 6, 1, 3, 0, tzinfo=UTC) + timedelta(days=n) for n in range(6))
HISTORY_TABLES = (
    "training_project_history",
    "instance_type_history",
    "training_job_history",
    "checkpoint_history",
)


@dataclass(frozen=True)
class Shown:
    """What the API showed one night, in the terms the archive keeps."""

    projects: dict[str, str]  # id -> name
    jobs: dict[str, tuple[str, str]]  # id -> (status, instance type id)
    instance_types: dict[str, int]  # id -> memory_limit_mib
    checkpoints: dict[tuple[str, str], tuple[int, int | None]]  # (job, checkpoint) -> (size, LoRA r)


def shown(fake: FakeBaseten, hidden_jobs: Collection[str] = ()) -> Shown:
    """Read the organisation as the API serves it now, less the jobs a hook hides from their listing."""
    jobs = [job for job in fake.job_ids() if job not in hidden_jobs]
    served = {job: fake.job(job) for job in jobs}
    return Shown(
        projects={pid: fake.project(pid)["name"] for pid in fake.project_ids()},
        jobs={job: (data["current_status"], data["instance_type"]["id"]) for job, data in served.items()},
        instance_types={
            data["instance_type"]["id"]: data["instance_type"]["memory_limit_mib"] for data in served.values()
        },
        checkpoints={
            (job, c["checkpoint_id"]): (c["size_bytes"], (c.get("lora_adapter_config") or {}).get("r"))
            for job in jobs
            for c in fake.checkpoints(job)
        },
    )


def archived(engine: Engine, at: datetime | None) -> Shown:
    """Read the archive as it stood at `at` (None: now), through `archiver query`'s code path."""

    def read(sql: str) -> list[tuple[Any, ...]]:
        with query.results(engine, sql, at) as result:
            return list(result.rows)

    return Shown(
        projects=dict(read("SELECT id, name FROM training_projects WHERE deleted_at IS NULL")),
        jobs={
            job: (status, itype)
            for job, status, itype in read(
                "SELECT id, current_status, instance_type_id FROM training_jobs WHERE deleted_at IS NULL"
            )
        },
        instance_types=dict(
            read(
                "SELECT DISTINCT t.id, t.memory_limit_mib FROM instance_types t "
                "JOIN training_jobs j ON j.instance_type_id = t.id WHERE j.deleted_at IS NULL"
            )
        ),
        checkpoints={
            (job, checkpoint): (size, r)
            for job, checkpoint, size, r in read(
                "SELECT c.training_job_id, c.checkpoint_id, c.size_bytes, l.r FROM checkpoints c "
                "LEFT JOIN lora_adapter_configs l ON l.id = c.lora_adapter_config_id WHERE c.deleted_at IS NULL"
            )
        },
    )


def hide_job(fake: FakeBaseten, project_id: str, job_id: str) -> None:
    """Leave a job out of its project's listing (and 404 its checkpoints), as if it were deleted."""
    listing = f"/v1/training_projects/{project_id}/jobs"

    def hook(method: str, path: str, body: bytes) -> Response | None:
        if path == listing:
            jobs = [fake.job(j) for j in fake.job_ids(project_id) if j != job_id]
            return Response.of(200, {"training_project": fake.project(project_id), "training_jobs": jobs})
        if path.startswith(f"{listing}/{job_id}"):
            return Response.of(404, {"message": "Training job not found"})
        return None

    fake.intercept(hook)


@dataclass
class Scenario:
    """Six nights of an organisation that changes, and what the API showed each night."""

    fake: FakeBaseten
    shown: list[Shown]
    reports: list[SyncReport]
    renamed_project: str
    respecified_type: str
    resized: tuple[str, str]
    relinked: tuple[str, str]
    finished_job: str
    hidden_job: str
    vanished: tuple[str, str]


def night(
    engine: Engine, fake: FakeBaseten, n: int, scenario_shown: list[Shown], hidden: set[str]
) -> SyncReport:
    # Nights 0-3 read everything; 4 and 5 are incremental, as cron runs them.
    report = sync(engine, fake, SyncOptions(full=n < 4), clock=lambda: NIGHTS[n])
    assert report.exit_code == 0, report.summary()
    scenario_shown.append(shown(fake, hidden))
    return report


def play(engine: Engine) -> Scenario:
    """Archive six nights; between them sizes, statuses, names, instance specs and LoRA links change,
    a job and a checkpoint vanish and come back, and the last night changes nothing."""
    fake = FakeBaseten(
        OrgSpec(seed=11, projects=3, jobs_per_project=3, checkpoints_per_job=4, active_fraction=0.3)
    )
    seen: list[Shown] = []
    reports = [night(engine, fake, 0, seen, set())]

    # Day 1: a checkpoint grows, a running job finishes, a project is renamed, an instance type is re-specified.
    jobs = fake.job_ids()
    lora = [
        (j, c["checkpoint_id"]) for j in jobs for c in fake.checkpoints(j) if c.get("lora_adapter_config")
    ]
    resized = lora[0]
    fake.update_checkpoint(*resized, size_bytes=fake.checkpoints(resized[0])[0]["size_bytes"] + 4096)
    finished = next(j for j in jobs if fake.job(j)["current_status"] == "TRAINING_JOB_RUNNING")
    fake.set_job(finished, current_status="TRAINING_JOB_COMPLETED")
    renamed = fake.project_ids()[0]
    fake.set_project(renamed, name="renamed-by-the-team")
    itype = fake.job(jobs[0])["instance_type"]
    for job in jobs:
        if fake.job(job)["instance_type"]["id"] == itype["id"]:
            fake.set_job(job, instance_type={**itype, "memory_limit_mib": itype["memory_limit_mib"] * 2})
    reports.append(night(engine, fake, 1, seen, set()))

    # Day 2: a checkpoint is re-linked to another LoRA config; another one vanishes; a job vanishes.
    relinked = next(key for key in lora if key[0] != resized[0])
    config = next(c for c in fake.checkpoints(relinked[0]) if c["checkpoint_id"] == relinked[1])[
        "lora_adapter_config"
    ]
    fake.update_checkpoint(*relinked, lora_adapter_config={**config, "r": config["r"] * 2})
    shrinking = next(
        j for j in jobs if j not in (resized[0], relinked[0], finished) and len(fake.checkpoints(j)) >= 2
    )
    gone = fake.checkpoints(shrinking)[-1]
    fake.delete_checkpoint(shrinking, gone["checkpoint_id"])
    hidden = next(
        j for j in jobs if j not in (resized[0], relinked[0], finished, shrinking) and fake.checkpoints(j)
    )
    hide_job(fake, fake.job(hidden)["training_project_id"], hidden)
    reports.append(night(engine, fake, 2, seen, {hidden}))

    # Day 3: both come back as they were.
    fake.clear_overrides()
    fake.add_checkpoint(shrinking, **gone)
    reports.append(night(engine, fake, 3, seen, set()))

    # Day 4 and 5: nothing changes.
    reports.append(night(engine, fake, 4, seen, set()))
    reports.append(night(engine, fake, 5, seen, set()))
    return Scenario(
        fake,
        seen,
        reports,
        renamed,
        itype["id"],
        resized,
        relinked,
        finished,
        hidden,
        (shrinking, gone["checkpoint_id"]),
    )
