"""`archiver demo`: the real sync path against the built-in fake API, into a SQLite file, three nights running.

Night 0 archives the organisation as generated; then a night passes in the fake (jobs finish,
checkpoints come and go, a project is renamed, then another deleted: see `fake_api.nights`) and
it is synced again, twice. The archive then answers as of the first night's run (the deleted
project still there, the renamed one under its old name) and says its live storage after each night.

The organisation is a generated one plus the project and jobs README.md's examples name
(project `n4q95w5`, job `p7qr9qv`, as in Baseten's API reference), dated relative to now, so
that every example in the README finds rows in the demo archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, query
from archiver.client import BasetenClient
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, Night, OrgSpec, advance, serve
from archiver.schema import sync_runs
from archiver.sync import SyncOptions, SyncReport, run_sync

# Live storage by project, read from a view like every query in README.md's quick start.
SAMPLE_QUERY = """
SELECT project_id, project_name, COUNT(*) AS checkpoints, SUM(size_bytes) AS size_bytes
FROM checkpoint_facts
WHERE deleted_at IS NULL
GROUP BY project_id, project_name
ORDER BY size_bytes DESC
"""

# The whole archive as it stood at one instant (run with `query --as-of`): live storage, all projects.
TOTAL_QUERY = """
SELECT COUNT(*) AS checkpoints, SUM(size_bytes) AS size_bytes
FROM checkpoint_facts
WHERE deleted_at IS NULL
"""

NIGHTS = 3  # night 0 as generated, then two that pass: a project renamed, then one deleted

PROJECT_ID, JOB_ID = "n4q95w5", "p7qr9qv"
_INSTANCE_TYPE = {
    "id": "H200:8x208x2000",
    "name": "8xH200",
    "memory_limit_mib": 2048000,
    "millicpu_limit": 208000,
    "gpu_count": 8,
    "gpu_type": "H200",
    "gpu_memory_limit_mib": 143360,
}
# LoRA on every expert of a 671B mixture of experts: adapters larger than most full checkpoints.
_BASE_MODEL = "deepseek-ai/DeepSeek-V3"


def _lora(r: int) -> dict[str, Any]:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": _BASE_MODEL,
        "r": r,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.05,
        "bias": "none",
        "target_modules": ["gate_proj", "up_proj", "down_proj"],
    }


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _failed_job(
    job_id: str, name: str, created: datetime, hours: int, error: str, r: int, saved: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A LoRA job that saved a checkpoint every five hours, then failed `hours` after it started."""
    job = {
        "id": job_id,
        "name": name,
        "created_at": _stamp(created),
        "updated_at": _stamp(created + timedelta(hours=hours)),
        "current_status": "TRAINING_JOB_FAILED",
        "error_message": error,
        "instance_type": _INSTANCE_TYPE,
        "training_project_id": PROJECT_ID,
        "checkpoint_sync_status": "COMPLETED",
        "priority": 5,
        "availability_model": "dedicated",
        "user": {"email": "alice@example.com"},
        "node_count": 2,
    }
    checkpoints = [
        {
            "checkpoint_id": f"checkpoint-{500 * step}",
            "training_job_id": job_id,
            "created_at": _stamp(created + timedelta(hours=5 * step, minutes=7 * step)),
            "checkpoint_type": "lora",
            "base_model": _BASE_MODEL,
            "size_bytes": 809_500_000 * r,  # bf16 weights of rank r on every expert
            "sync_status": "COMPLETE",
            "lora_adapter_config": _lora(r),
        }
        for step in range(1, saved + 1)
    ]
    return job, checkpoints


def organisation(seed: int = 0, now: datetime | None = None) -> FakeBaseten:
    """The demo's organisation: the one `seed` generates, and the README's examples dated from `now`."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    fake = FakeBaseten(OrgSpec(seed=seed))
    created = now - timedelta(days=21)
    fake.place_project(
        {
            "id": PROJECT_ID,
            "name": "deepseek-v3-experts-lora",
            "created_at": _stamp(created),
            "updated_at": _stamp(created),
            "team_name": "research",
        }
    )
    oom = "CUDA out of memory. Tried to allocate 2.00 GiB"
    nccl = "NCCL watchdog timeout after 1800000 ms"
    for job, checkpoints in (
        _failed_job("k3vz8tm", "lora-experts-r32", now - timedelta(days=6), 9, nccl, 32, 1),
        _failed_job(JOB_ID, "lora-experts-r64", now - timedelta(days=3), 22, oom, 64, 4),
    ):
        fake.place_job(job, checkpoints)
    return fake


@dataclass
class NightRun:
    """One night of the demo: what changed in the organisation (none on night 0), and the sync after it."""

    number: int
    changes: Night | None
    report: SyncReport
    finished_at: datetime


@dataclass
class Demo:
    """What `run_demo` did and found: a sync per night, the first night's storage as of then, storage per night."""

    nights: list[NightRun]
    as_of: tuple[list[str], list[tuple[Any, ...]]]  # SAMPLE_QUERY as of the first night's run
    over_time: tuple[list[str], list[tuple[Any, ...]]]  # TOTAL_QUERY as of each night's run

    @property
    def exit_code(self) -> int:
        """The worst of the nights' syncs: 0 when every one archived everything."""
        return max(night.report.exit_code for night in self.nights)


def run_demo(database_url: str, seed: int = 0, nights: int = NIGHTS) -> Demo:
    """Serve a fake organisation on loopback and sync it night after night, then ask the archive about its past."""
    engine = db.make_engine(database_url)
    db.check_connection(engine)
    runs: list[NightRun] = []
    fake = organisation(seed)
    with serve(fake) as url, BasetenClient(DEFAULT_API_KEY, url) as client:
        for number in range(nights):
            changes = advance(fake) if number else None
            report = run_sync(engine, client, SyncOptions(migrate=True))
            runs.append(NightRun(number, changes, report, _finished_at(engine, report)))
    as_of = _ask(engine, SAMPLE_QUERY, runs[0].finished_at)
    columns: list[str] = []
    totals: list[tuple[Any, ...]] = []
    for run in runs:
        columns, rows = _ask(engine, TOTAL_QUERY, run.finished_at)
        totals.append((run.number, run.finished_at, *rows[0]))
    engine.dispose()
    return Demo(runs, as_of, (["night", "as_of", *columns], totals))


def _ask(engine: Engine, sql: str, as_of: datetime) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a read-only query against the archive as it stood at `as_of`."""
    with query.results(engine, sql, as_of=as_of) as result:
        return result.columns, list(result.rows)


def _finished_at(engine: Engine, report: SyncReport) -> datetime:
    """When a run ended, as the archive recorded it."""
    with engine.connect() as connection:
        finished = connection.scalar(
            sa.select(sync_runs.c.finished_at).where(sync_runs.c.id == report.run_id)
        )
    if not isinstance(finished, datetime):
        raise RuntimeError(f"run {report.run_id} has no finished_at")
    return finished
