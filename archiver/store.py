"""Write normalized rows into the archive. Helpers take a connection and never commit:
the orchestrator in `sync.py` owns transactions.

Nothing is ever deleted. A project, job or checkpoint that the API stops listing gets
`deleted_at` (and so does everything under it); one that comes back has it cleared.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.db import chunked, upsert
from archiver.normalize import TERMINAL_JOB_STATUSES, CheckpointListing, JobRecord, Row
from archiver.schema import (
    UTCDateTime,
    checkpoints,
    instance_types,
    lora_adapter_configs,
    training_job_status_history,
    training_jobs,
    training_projects,
)

# Checkpoint columns whose change makes a row "updated".
CHECKPOINT_VALUES = (
    "created_at",
    "checkpoint_type",
    "base_model",
    "lora_adapter_config_id",
    "size_bytes",
    "sync_status",
    "extra",
    "deleted_at",
)
_DELETED_AT = CHECKPOINT_VALUES.index("deleted_at")


@dataclass
class WriteCounts:
    """What writes did to the checkpoints table."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def __iadd__(self, other: WriteCounts) -> WriteCounts:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        return self


def _seen(rows: Iterable[Row], now: datetime) -> list[Row]:
    return [{**row, "first_seen_at": now, "last_seen_at": now, "deleted_at": None} for row in rows]


def save_listing(
    connection: Connection, project: Row, jobs: Sequence[JobRecord], now: datetime, run_id: int | None
) -> None:
    """Upsert a project and the jobs its listing named, recording status changes."""
    upsert(connection, training_projects, _seen([project], now), key=["id"])
    save_jobs(connection, jobs, now, run_id)


def save_jobs(connection: Connection, jobs: Sequence[JobRecord], now: datetime, run_id: int | None) -> None:
    """Upsert job rows and the instance types they ran on, recording status changes."""
    types = {record.instance_type["id"]: record.instance_type for record in jobs if record.instance_type}
    upsert(
        connection,
        instance_types,
        [{**row, "first_seen_at": now, "last_seen_at": now} for row in types.values()],
        key=["id"],
    )
    upsert(connection, training_jobs, _seen((record.row for record in jobs), now), key=["id"])
    record_status_changes(connection, [record.row["id"] for record in jobs], now, run_id)


def record_status_changes(
    connection: Connection, job_ids: Sequence[str], now: datetime, run_id: int | None
) -> None:
    """Add a history row for each job whose status differs from its last recorded one (or has none)."""
    if not job_ids:
        return
    jobs, history = training_jobs, training_job_status_history
    latest = history.alias("latest")
    last_id = (
        sa.select(sa.func.max(latest.c.id))
        .where(latest.c.training_job_id == jobs.c.id)
        .correlate(jobs)
        .scalar_subquery()
    )
    unchanged = (
        sa.select(history.c.id)
        .where(history.c.id == last_id, history.c.status.is_not_distinct_from(jobs.c.current_status))
        .correlate(jobs)
        .exists()
    )
    for batch in chunked(job_ids):
        changed = sa.select(
            jobs.c.id,
            jobs.c.current_status,
            sa.literal(now, UTCDateTime()),
            sa.literal(run_id, sa.BigInteger()),
        ).where(jobs.c.id.in_(batch), ~unchanged)
        connection.execute(
            sa.insert(history).from_select(
                ["training_job_id", "status", "observed_at", "sync_run_id"], changed
            )
        )


@dataclass(frozen=True)
class FetchState:
    """What the last full read of a job's checkpoints saw."""

    job_updated_at: datetime | None
    all_complete: bool | None


def fetch_states(connection: Connection, job_ids: Sequence[str]) -> dict[str, FetchState]:
    """The archived fetch state of these jobs (absent: never fetched)."""
    jobs = training_jobs
    states: dict[str, FetchState] = {}
    for batch in chunked(job_ids):
        query = sa.select(
            jobs.c.id, jobs.c.checkpoints_fetched_job_updated_at, jobs.c.checkpoints_all_complete
        ).where(jobs.c.id.in_(batch), jobs.c.checkpoints_fetched_at.is_not(None), jobs.c.deleted_at.is_(None))
        states.update({row.id: FetchState(row[1], row[2]) for row in connection.execute(query)})
    return states


def can_skip(record: JobRecord, state: FetchState | None) -> bool:
    """Whether a job's checkpoints cannot have changed since they were last read in full.

    True for a job in a terminal state whose `updated_at` has not moved since a read that
    found every checkpoint uploaded.
    """
    return (
        state is not None
        and bool(state.all_complete)
        and record.row["current_status"] in TERMINAL_JOB_STATUSES
        and record.row["updated_at"] is not None
        and state.job_updated_at == record.row["updated_at"]
    )


def save_lora_configs(connection: Connection, configs: dict[str, Row], now: datetime) -> dict[str, int]:
    """Upsert distinct LoRA adapter configs; return their ids by sha256."""
    if not configs:
        return {}
    rows = [{**row, "first_seen_at": now, "last_seen_at": now} for row in configs.values()]
    upsert(connection, lora_adapter_configs, rows, key=["config_sha256"])
    ids: dict[str, int] = {}
    table = lora_adapter_configs
    for batch in chunked(list(configs)):
        query = sa.select(table.c.config_sha256, table.c.id).where(table.c.config_sha256.in_(batch))
        ids.update({sha: id_ for sha, id_ in connection.execute(query)})
    return ids


def save_checkpoint_listings(
    connection: Connection, listings: Sequence[CheckpointListing], now: datetime, run_id: int | None
) -> WriteCounts:
    """Archive whole jobs' checkpoint listings: insert new rows, update changed ones, skip the rest.

    One read of the jobs' archived checkpoints decides which rows changed; only those go to
    the database, in batched native upserts; unchanged rows are not written at all. Their
    sighting is recorded once per job, in `training_jobs.checkpoints_fetched_at`: bumping a
    per-row `last_seen_at` every night would rewrite the whole table (see `_mark_checkpoints_deleted`).
    Rows the listing no longer has get `deleted_at`.
    """
    if not listings:
        return WriteCounts()
    save_jobs(connection, [listing.job for listing in listings], now, run_id)
    configs: dict[str, Row] = {}
    for listing in listings:
        configs.update(listing.lora_configs)
    config_ids = save_lora_configs(connection, configs, now)

    job_ids = [listing.job.row["id"] for listing in listings]
    archived = _archived_checkpoints(connection, job_ids)
    counts = WriteCounts()
    to_write: list[Row] = []
    seen = {"deleted_at": None, "first_seen_at": now, "last_seen_at": now}
    for listing in listings:
        for listed in listing.checkpoints:
            sha = listed["lora_config_sha256"]
            row = {**listed, "lora_adapter_config_id": config_ids[sha] if sha else None, **seen}
            del row["lora_config_sha256"]
            before = archived.pop((row["training_job_id"], row["checkpoint_id"]), None)
            if before is None:
                counts.inserted += 1
            elif before[1] != tuple(row[name] for name in CHECKPOINT_VALUES):
                counts.updated += 1
            else:
                counts.unchanged += 1
                continue
            to_write.append(row)
    upsert(connection, checkpoints, to_write, key=["training_job_id", "checkpoint_id"])
    # What is left in `archived` was not listed this time.
    vanished = [id_ for id_, values in archived.values() if values[_DELETED_AT] is None]
    for batch in chunked(vanished):
        _mark_checkpoints_deleted(connection, checkpoints.c.id.in_(batch), now)
    counts.deleted = len(vanished)
    _mark_fetched(connection, listings, now)
    return counts


def _archived_checkpoints(
    connection: Connection, job_ids: Sequence[str]
) -> dict[tuple[str, str], tuple[int, tuple[Any, ...]]]:
    """The jobs' archived checkpoints by key: their id and `CHECKPOINT_VALUES`."""
    values = [checkpoints.c[name] for name in CHECKPOINT_VALUES]
    query = sa.select(checkpoints.c.training_job_id, checkpoints.c.checkpoint_id, checkpoints.c.id, *values)
    query = query.where(checkpoints.c.training_job_id.in_(job_ids))
    return {(row[0], row[1]): (row[2], tuple(row[3:])) for row in connection.execute(query)}


def _mark_fetched(connection: Connection, listings: Sequence[CheckpointListing], now: datetime) -> None:
    statement = (
        sa.update(training_jobs)
        .where(training_jobs.c.id == sa.bindparam("job_id"))
        .values(
            checkpoints_fetched_at=now,
            checkpoints_fetched_job_updated_at=sa.bindparam("job_updated_at", type_=UTCDateTime()),
            checkpoints_all_complete=sa.bindparam("all_complete"),
        )
    )
    connection.execute(
        statement,
        [
            {
                "job_id": listing.job.row["id"],
                "job_updated_at": listing.job.row["updated_at"],
                "all_complete": listing.all_complete,
            }
            for listing in listings
        ],
    )


def missing_projects(connection: Connection, listed: Collection[str]) -> list[str]:
    """Live archived projects that a complete project listing does not name."""
    query = sa.select(training_projects.c.id).where(training_projects.c.deleted_at.is_(None))
    return [project_id for (project_id,) in connection.execute(query) if project_id not in listed]


def missing_jobs(connection: Connection, project_id: str, listed: Collection[str]) -> list[str]:
    """A project's live archived jobs that its complete job listing does not name."""
    query = sa.select(training_jobs.c.id).where(
        training_jobs.c.training_project_id == project_id, training_jobs.c.deleted_at.is_(None)
    )
    return [job_id for (job_id,) in connection.execute(query) if job_id not in listed]


def mark_deleted(
    connection: Connection, now: datetime, *, projects: Sequence[str] = (), jobs: Sequence[str] = ()
) -> int:
    """Mark projects and jobs deleted, with everything they hold; return how many checkpoints that marked.

    Baseten deletes a project's jobs and checkpoints with it, so they go together here too.
    """
    for batch in chunked(projects):
        connection.execute(
            sa.update(training_projects)
            .where(training_projects.c.id.in_(batch), training_projects.c.deleted_at.is_(None))
            .values(deleted_at=now)
        )
    held = sa.select(training_jobs.c.id).where(
        training_jobs.c.training_project_id.in_(projects), training_jobs.c.deleted_at.is_(None)
    )
    jobs = [*jobs, *(job_id for (job_id,) in connection.execute(held))] if projects else list(jobs)
    marked = 0
    for batch in chunked(jobs):
        connection.execute(
            sa.update(training_jobs)
            .where(training_jobs.c.id.in_(batch), training_jobs.c.deleted_at.is_(None))
            .values(deleted_at=now)
        )
        marked += _mark_checkpoints_deleted(connection, checkpoints.c.training_job_id.in_(batch), now)
    return marked


def _mark_checkpoints_deleted(connection: Connection, which: sa.ColumnElement[bool], now: datetime) -> int:
    """Mark live checkpoints deleted; return how many.

    A live checkpoint's `last_seen_at` is only written when its row is; it was also seen at
    every read of its job's checkpoints since. Marking it deleted settles that: `last_seen_at`
    becomes the job's last full read, which preceded this one.
    """
    last_read = (
        sa.select(training_jobs.c.checkpoints_fetched_at)
        .where(training_jobs.c.id == checkpoints.c.training_job_id)
        .scalar_subquery()
    )
    result = connection.execute(
        sa.update(checkpoints)
        .where(which, checkpoints.c.deleted_at.is_(None))
        .values(deleted_at=now, last_seen_at=sa.func.coalesce(last_read, checkpoints.c.last_seen_at))
    )
    return result.rowcount or 0
