"""The run ledger: a `sync_runs` row per run, a `sync_errors` row per failure."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from archiver import __version__, db
from archiver.errors import ArchiverError
from archiver.schema import sync_errors, sync_runs

log = logging.getLogger("archiver.sync")

METRICS = "metrics"  # the kind of a sync_errors row: the run could not write its --metrics-file
RUNNING = "running"
SUCCEEDED = "succeeded"
PARTIAL = "partial"
FAILED = "failed"
INTERRUPTED = "interrupted"


def close_dead_runs(connection: Connection, now: datetime, alive: Collection[int] = ()) -> int:
    """Mark runs still 'running' as failed, but those `alive` (their process still holds its run lock)."""
    result = connection.execute(
        sa.update(sync_runs)
        .where(sync_runs.c.status == RUNNING, sync_runs.c.id.not_in(alive))
        .values(
            status=FAILED,
            finished_at=now,
            error_summary="the process ended without finishing the run (killed or crashed); "
            "found by a later run, which archived what it could",
        )
    )
    return result.rowcount or 0


def latest_start(connection: Connection) -> datetime | None:
    """When the latest run started, if any did."""
    return connection.execute(sa.select(sa.func.max(sync_runs.c.started_at))).scalar()


def start_run(
    connection: Connection, now: datetime, scope: dict[str, Any] | None, full: bool, options: dict[str, Any]
) -> int:
    """Record a run as started; return its id."""
    result = connection.execute(
        sa.insert(sync_runs)
        .values(
            started_at=now,
            status=RUNNING,
            scope=scope,
            full_sync=full,
            options=options,
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


def add_error(database_url: str, run_id: int, kind: str, message: str, occurred_at: datetime) -> None:
    """Add a failure to a run that has ended (its metrics file, written after it); logged if it cannot be."""
    try:
        engine = db.open_existing(database_url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    sa.insert(sync_errors).values(
                        sync_run_id=run_id, kind=kind, message=message[:2000], occurred_at=occurred_at
                    )
                )
        finally:
            engine.dispose()
    except (ArchiverError, sa.exc.DBAPIError) as exc:
        log.error("could not record in run %d that %s: %s", run_id, message, exc)


def last_success(connection: Connection) -> datetime | None:
    """When a full run (of the whole organisation, no --project or --job) last succeeded; None if none has.

    A scoped run that succeeds says nothing of the rest of the organisation: it never counts.
    """
    latest = sa.select(sa.func.max(sync_runs.c.finished_at)).where(
        sync_runs.c.status == SUCCEEDED, sync_runs.c.scope.is_(None)
    )
    found: datetime | None = connection.execute(latest).scalar()
    return found


def last_success_in(database_url: str) -> datetime | None:
    """`last_success` of an existing archive, read without writing; None when it cannot be read."""
    with suppress(ArchiverError, sa.exc.DBAPIError):
        engine = db.open_existing(database_url)
        try:
            with engine.connect() as connection:
                return last_success(connection)
        finally:
            engine.dispose()
    return None
