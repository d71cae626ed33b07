"""The run ledger: a `sync_runs` row per run, a `sync_errors` row per failure."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from archiver import __version__
from archiver.schema import sync_errors, sync_runs

RUNNING = "running"
SUCCEEDED = "succeeded"
PARTIAL = "partial"
FAILED = "failed"
INTERRUPTED = "interrupted"

COUNTERS = (
    "projects",
    "jobs",
    "jobs_fetched",
    "jobs_skipped",
    "jobs_failed",
    "checkpoints_inserted",
    "checkpoints_updated",
    "checkpoints_unchanged",
    "checkpoints_deleted",
    "requests",
)


def close_dead_runs(connection: Connection, now: datetime) -> int:
    """Mark runs still 'running' as failed: the caller holds the sync lock, so their process is gone."""
    result = connection.execute(
        sa.update(sync_runs)
        .where(sync_runs.c.status == RUNNING)
        .values(
            status=FAILED,
            finished_at=now,
            error_summary="the process ended without finishing the run (killed or crashed); "
            "found by a later run, which archived what it could",
        )
    )
    return result.rowcount or 0


def start_run(connection: Connection, now: datetime, scope: dict[str, Any] | None, full: bool) -> int:
    """Record a run as started; return its id."""
    result = connection.execute(
        sa.insert(sync_runs)
        .values(
            started_at=now,
            status=RUNNING,
            scope=scope,
            full_sync=full,
            archiver_version=__version__,
            hostname=socket.gethostname(),
            pid=os.getpid(),
        )
        .returning(sync_runs.c.id)
    )
    return int(result.scalar_one())


def record_progress(connection: Connection, run_id: int, counts: dict[str, int]) -> None:
    """Store the run's counters so far (in the transaction that committed the work they count)."""
    connection.execute(sa.update(sync_runs).where(sync_runs.c.id == run_id).values(**counts))


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    status: str,
    finished_at: datetime,
    counts: dict[str, int],
    errors: Sequence[dict[str, Any]],
    error_summary: str | None,
) -> None:
    """Record how a run ended, with its failures."""
    with engine.begin() as connection:
        if errors:
            connection.execute(sa.insert(sync_errors), [{**error, "sync_run_id": run_id} for error in errors])
        connection.execute(
            sa.update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(status=status, finished_at=finished_at, error_summary=error_summary, **counts)
        )


def recent_runs(engine: Engine, limit: int = 20) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The latest runs, newest first, with their failure counts and duration in seconds."""
    failures = (
        sa.select(sa.func.count())
        .where(sync_errors.c.sync_run_id == sync_runs.c.id, sync_errors.c.kind != "gone")
        .scalar_subquery()
    )
    query = (
        sa.select(
            sync_runs.c.id,
            sync_runs.c.started_at,
            sync_runs.c.finished_at,
            sync_runs.c.status,
            sync_runs.c.full_sync,
            sync_runs.c.projects,
            sync_runs.c.jobs,
            sync_runs.c.jobs_fetched,
            sync_runs.c.jobs_skipped,
            sync_runs.c.checkpoints_inserted,
            sync_runs.c.checkpoints_updated,
            sync_runs.c.checkpoints_unchanged,
            sync_runs.c.checkpoints_deleted,
            sync_runs.c.requests,
            failures.label("errors"),
            sync_runs.c.error_summary,
        )
        .order_by(sync_runs.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        result = connection.execute(query)
        columns = list(result.keys())
        rows = [tuple(row) for row in result]
    index = columns.index("finished_at")
    columns.insert(index + 1, "seconds")
    table = []
    for row in rows:
        started, finished = row[1], row[index]
        seconds = round((finished - started).total_seconds(), 1) if finished and started else None
        table.append((*row[: index + 1], seconds, *row[index + 1 :]))
    return columns, table
