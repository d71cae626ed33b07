"""Write normalized rows into the archive. Helpers take a connection and never commit:
the orchestrator in `sync.py` owns transactions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.db import chunked, upsert
from archiver.normalize import CheckpointPage, JobRecord, Row
from archiver.schema import (
    checkpoints,
    instance_types,
    lora_adapter_configs,
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
)


@dataclass
class WriteCounts:
    """What one write did to the checkpoints table."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __iadd__(self, other: WriteCounts) -> WriteCounts:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


def _seen(rows: Iterable[Row], now: datetime) -> list[Row]:
    return [{**row, "first_seen_at": now, "last_seen_at": now} for row in rows]


def save_listing(connection: Connection, project: Row, jobs: Sequence[JobRecord], now: datetime) -> None:
    """Upsert a project and the jobs its listing named."""
    upsert(connection, training_projects, _seen([project], now), key=["id"])
    save_jobs(connection, jobs, now)


def save_jobs(connection: Connection, jobs: Sequence[JobRecord], now: datetime) -> None:
    """Upsert job rows and the instance types they ran on."""
    types = {record.instance_type["id"]: record.instance_type for record in jobs if record.instance_type}
    upsert(connection, instance_types, _seen(types.values(), now), key=["id"])
    upsert(connection, training_jobs, _seen((record.row for record in jobs), now), key=["id"])


def save_lora_configs(connection: Connection, configs: dict[str, Row], now: datetime) -> dict[str, int]:
    """Upsert distinct LoRA adapter configs; return their ids by sha256."""
    if not configs:
        return {}
    upsert(connection, lora_adapter_configs, _seen(configs.values(), now), key=["config_sha256"])
    ids: dict[str, int] = {}
    table = lora_adapter_configs
    for batch in chunked(list(configs)):
        query = sa.select(table.c.config_sha256, table.c.id).where(table.c.config_sha256.in_(batch))
        ids.update({sha: id_ for sha, id_ in connection.execute(query)})
    return ids


def save_checkpoint_pages(
    connection: Connection, pages: Sequence[CheckpointPage], now: datetime
) -> WriteCounts:
    """Archive whole jobs' checkpoint listings: insert new rows, update changed ones, skip the rest.

    One read of the jobs' archived checkpoints decides which rows changed; only those go to
    the database, in batched native upserts. Unchanged rows get only `last_seen_at`.
    """
    if not pages:
        return WriteCounts()
    save_jobs(connection, [page.job for page in pages], now)
    configs: dict[str, Row] = {}
    for page in pages:
        configs.update(page.lora_configs)
    config_ids = save_lora_configs(connection, configs, now)

    job_ids = [page.job.row["id"] for page in pages]
    archived = _archived_checkpoints(connection, job_ids)
    counts = WriteCounts()
    to_write: list[Row] = []
    for page in pages:
        for listed in page.checkpoints:
            row = {key: value for key, value in listed.items() if key != "lora_config_sha256"}
            sha = listed["lora_config_sha256"]
            row["lora_adapter_config_id"] = config_ids[sha] if sha else None
            key = (row["training_job_id"], row["checkpoint_id"])
            before = archived.pop(key, None)
            if before is None:
                counts.inserted += 1
            elif any(before[name] != row[name] for name in CHECKPOINT_VALUES):
                counts.updated += 1
            else:
                counts.unchanged += 1
                continue
            to_write.append(row)
    upsert(connection, checkpoints, _seen(to_write, now), key=["training_job_id", "checkpoint_id"])
    # What is left in `archived` was not listed this time: it keeps its last sighting.
    not_listed = [row["id"] for row in archived.values()]
    _mark_seen(connection, job_ids, not_listed, now)
    return counts


def _archived_checkpoints(connection: Connection, job_ids: Sequence[str]) -> dict[tuple[str, str], Any]:
    columns = [checkpoints.c.id, checkpoints.c.training_job_id, checkpoints.c.checkpoint_id]
    columns += [checkpoints.c[name] for name in CHECKPOINT_VALUES]
    query = sa.select(*columns).where(checkpoints.c.training_job_id.in_(job_ids))
    return {(row.training_job_id, row.checkpoint_id): row._mapping for row in connection.execute(query)}


def _mark_seen(
    connection: Connection, job_ids: Sequence[str], not_listed: Sequence[int], now: datetime
) -> None:
    statement = (
        sa.update(checkpoints)
        .where(checkpoints.c.training_job_id.in_(job_ids), checkpoints.c.last_seen_at < now)
        .values(last_seen_at=now)
    )
    if not_listed:
        statement = statement.where(checkpoints.c.id.not_in(not_listed))
    connection.execute(statement)
