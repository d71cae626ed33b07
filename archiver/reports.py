"""The named reports: typed, parameterized selects over the BI views, one function each.

They answer the questions people ask at a terminal; anything else is one `archiver query` away.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from archiver import durations
from archiver.errors import UsageError
from archiver.query import read_only
from archiver.schema import sync_errors, sync_runs
from archiver.views import Bytes, checkpoint_facts, job_facts

STATUS_PREFIX = "TRAINING_JOB_"


def storage() -> sa.Select[Any]:
    """Checkpoint storage by project, largest live storage first."""
    cf = checkpoint_facts
    live = cf.c.deleted_at.is_(None)
    live_bytes = _SizeSum(sa.case((live, cf.c.size_bytes), else_=sa.literal_column("0")))
    archived_bytes = _SizeSum(cf.c.size_bytes)
    return (
        sa.select(
            cf.c.project_id,
            cf.c.project_name,
            cf.c.team_name,
            sa.cast(sa.func.sum(sa.case((live, 1), else_=0)), sa.BigInteger).label("live_checkpoints"),
            live_bytes.label("live_size_bytes"),
            sa.func.count().label("archived_checkpoints"),
            archived_bytes.label("archived_size_bytes"),
            sa.func.max(cf.c.project_deleted_at).label("project_deleted_at"),
        )
        .group_by(cf.c.project_id, cf.c.project_name, cf.c.team_name)
        .order_by(live_bytes.desc(), archived_bytes.desc(), cf.c.project_id)
    )


def jobs(
    statuses: Sequence[str] = (), since: datetime | None = None, project_ids: Sequence[str] = ()
) -> sa.Select[Any]:
    """Jobs, most recently updated first, optionally by status, recency and project."""
    jf = job_facts
    query = sa.select(
        jf.c.job_id,
        jf.c.job_name,
        jf.c.project_name,
        jf.c.job_status,
        jf.c.updated_at,
        jf.c.instance_type_name,
        jf.c.checkpoint_count,
        jf.c.live_size_bytes,
        jf.c.gpu_hours_estimate,
        jf.c.error_message,
    ).order_by(jf.c.updated_at.desc(), jf.c.job_id)
    if statuses:
        query = query.where(jf.c.job_status.in_([status_name(s) for s in statuses]))
    if since is not None:
        query = query.where(jf.c.updated_at >= since)
    if project_ids:
        query = query.where(jf.c.project_id.in_(project_ids))
    return query


def checkpoints(job_ids: Sequence[str]) -> sa.Select[Any]:
    """The checkpoints of some jobs, oldest first."""
    cf = checkpoint_facts
    return (
        sa.select(
            cf.c.job_id,
            cf.c.checkpoint_id,
            cf.c.checkpoint_type,
            cf.c.created_at,
            cf.c.size_bytes,
            cf.c.sync_status,
            cf.c.base_model,
            cf.c.lora_r,
            cf.c.deleted_at,
        )
        .where(cf.c.job_id.in_(job_ids))
        .order_by(cf.c.job_id, cf.c.created_at.nulls_last(), cf.c.checkpoint_id)
    )


def require_jobs(engine: Engine, job_ids: Sequence[str]) -> None:
    """Refuse job ids the archive has never seen, rather than print an empty table."""
    with read_only(engine) as connection:
        known = set(connection.scalars(sa.select(job_facts.c.job_id).where(job_facts.c.job_id.in_(job_ids))))
    if missing := [job_id for job_id in job_ids if job_id not in known]:
        raise UsageError(
            f"no job {', '.join(missing)} in the archive; `archiver report jobs` lists the archived jobs "
            "(and `archiver sync --job ID` archives one)"
        )


def status_name(text: str) -> str:
    """Spell a status the way the API does: failed -> TRAINING_JOB_FAILED."""
    name = text.strip().upper()
    return name if name.startswith(STATUS_PREFIX) else STATUS_PREFIX + name


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """Read --since: a duration back from now (7d, 24h, 30m, 2w, 1d12h) or an ISO date or time (UTC)."""
    now = now or datetime.now(UTC)
    try:
        # A bare number is no duration here: `--since 2026` more likely means a year than seconds.
        seconds = durations.parse_seconds(text, plain=False)
    except ValueError:
        return parse_instant(text, "--since", "a duration such as 7d, 24h, 30m or 2w, or ")
    try:
        return now - timedelta(seconds=seconds)
    except OverflowError:
        raise UsageError(f"--since {text!r} reaches back before year 1") from None


def parse_instant(text: str, option: str, alternatives: str = "") -> datetime:
    """Read an instant: ISO 8601 (`2026-11-20T03:00:00Z`, an offset, or none: UTC) or a date (UTC midnight)."""
    try:
        moment = datetime.fromisoformat(text.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(
            f"{option} expects {alternatives}an ISO 8601 date or time such as 2026-11-20 or "
            f"2026-11-20T03:00:00Z, within years 1-9999 UTC; got {text[:60]!r}"
        ) from None


def runs(limit: int = 20) -> sa.Select[Any]:
    """The latest runs, newest first, with their duration in seconds and how many jobs failed."""
    failures = (
        sa.select(sa.func.count())
        .where(sync_errors.c.sync_run_id == sync_runs.c.id, sync_errors.c.kind != "gone")
        .scalar_subquery()
    )
    seconds = sa.cast(
        sa.func.round(sa.cast(_Seconds(sync_runs.c.started_at, sync_runs.c.finished_at), sa.Numeric), 1),
        sa.Float,
    )
    r = sync_runs.c
    return (
        sa.select(
            r.id,
            r.started_at,
            r.finished_at,
            seconds.label("seconds"),
            r.status,
            r.full_sync,
            r.projects,
            r.jobs,
            r.jobs_fetched,
            r.jobs_skipped,
            r.checkpoints_inserted,
            r.checkpoints_updated,
            r.checkpoints_unchanged,
            r.checkpoints_deleted,
            r.requests,
            failures.label("errors"),
            r.error_summary,
        )
        .order_by(r.id.desc())
        .limit(limit)
    )


class _Seconds(sa.ColumnElement[float]):
    """The seconds from one timestamp to another, spelled as each database can."""

    inherit_cache = True
    type = sa.Float()

    def __init__(self, start: sa.ColumnElement[Any], end: sa.ColumnElement[Any]) -> None:
        self.start, self.end = start, end


@compiles(_Seconds)
def _seconds(element: _Seconds, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = compiler.process(element.start, **kw), compiler.process(element.end, **kw)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(_Seconds, "sqlite")
def _seconds_sqlite(element: _Seconds, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = compiler.process(element.start, **kw), compiler.process(element.end, **kw)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


class _SizeSum(sa.ColumnElement[int | float]):
    """The sum of byte counts, exact as far as the database can hold it (see `views.ByteSum`)."""

    inherit_cache = True
    # Part of the cache key: two sums of different sizes must not share compiled SQL.
    _traverse_internals = [("size", InternalTraversal.dp_clauseelement)]  # noqa: RUF012 (SQLAlchemy's API)
    type = Bytes

    def __init__(self, size: sa.ColumnElement[Any]) -> None:
        self.size = size


@compiles(_SizeSum)
def _size_sum(element: _SizeSum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"SUM({compiler.process(element.size, **kw)})"  # NUMERIC for bigints: exact


@compiles(_SizeSum, "sqlite")
def _size_sum_sqlite(element: _SizeSum, compiler: SQLCompiler, **kw: Any) -> str:
    # SUM raises past 2^63 - 1; the sums of each size's high and low 32 bits cannot, and integer
    # arithmetic that overflows turns REAL: exact up to 2^63 - 1, a close REAL beyond.
    size = compiler.process(element.size, **kw)
    return f"(SUM(({size}) >> 32) * 4294967296 + SUM(({size}) & 4294967295))"
