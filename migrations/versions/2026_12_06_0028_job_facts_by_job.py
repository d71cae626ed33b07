"""`job_facts_live` works out a job's checkpoint totals and latest checkpoint for the jobs asked for only.

Why: (issue 21) a sync rewrites the `job_facts` rows of the jobs it read (`facts.rewrite_jobs`: the view,
filtered by job), and with the weekly re-read every night reads some. The view grouped all of
`checkpoint_facts` by job and looked up every job's latest checkpoint before the filter kept a few:
a rewrite of 3 jobs cost as much as one of all (at 92,520 checkpoints 108-145 ms on both databases; at
925,594, SQLite, 1.0 s, of which the totals 582 ms and the latest checkpoints 380 ms). Each is now
worked out for each job the query keeps, through the index on its job: on PostgreSQL by LATERAL joins,
on SQLite (which has none) the latest checkpoint by a lookup in the join's condition and the totals as
one JSON object per job, from `json_each`, which SQLite evaluates once per job. 3 jobs' rows: 5-19 ms
on either database; all 2,000 as before (SQLite 154 ms both; PostgreSQL 145-172 ms before, 154-168
after, with JIT off as the sync runs). Its columns, their types and its rows are unchanged; on
PostgreSQL it is replaced in place, keeping its grants and description.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06
"""

import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op
from alembic.util import load_python_file

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v21 = _load("0021")

LATEST_JOIN = "LEFT JOIN latest_checkpoint lc ON lc.training_job_id = j.id"
TOTALS_JOIN = "LEFT JOIN checkpoint_totals t ON t.job_id = j.id"
SQLITE_LATEST = """\
-- Each job's first checkpoint in this order, looked up through the index on training_job_id for the
-- jobs kept only. Undated checkpoints last.
LEFT JOIN checkpoints lc ON lc.id = (
    SELECT l.id
    FROM checkpoints l
    WHERE l.training_job_id = j.id
    ORDER BY CASE WHEN l.created_at IS NULL THEN 1 ELSE 0 END, l.created_at DESC, l.id DESC
    LIMIT 1
)"""

SQLITE_TOTALS = """\
-- Each job's totals over its rows of checkpoint_facts (through the index on job_id), for the jobs kept
-- only: one object a job, the one row of json_each, which SQLite evaluates once for each job.
LEFT JOIN json_each(json_array((
    SELECT json_object(
        'checkpoint_count', COUNT(*),
        'live_checkpoint_count', SUM(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END),
        'size_high', SUM(((size_bytes) >> 32)),
        'size_low', SUM(((size_bytes) & 4294967295)),
        'live_high', SUM(((CASE WHEN deleted_at IS NULL THEN size_bytes ELSE 0 END) >> 32)),
        'live_low', SUM(((CASE WHEN deleted_at IS NULL THEN size_bytes ELSE 0 END) & 4294967295)),
        'first_checkpoint_at', MIN(created_at),
        'last_checkpoint_at', MAX(created_at)
    )
    FROM checkpoint_facts f
    WHERE f.job_id = j.id
))) t"""

POSTGRESQL_LATEST = """\
-- Each job's first checkpoint in this order, through the index on training_job_id, for the jobs kept
-- only. Undated checkpoints last (PostgreSQL sorts NULL first in DESC).
LEFT JOIN LATERAL (
    SELECT l.checkpoint_id, l.size_bytes
    FROM checkpoints l
    WHERE l.training_job_id = j.id
    ORDER BY CASE WHEN l.created_at IS NULL THEN 1 ELSE 0 END, l.created_at DESC, l.id DESC
    LIMIT 1
) lc ON true"""


def _once(sql: str, old: str, new: str) -> str:
    if sql.count(old) != 1:
        raise RuntimeError(f"expected one {old[:60]!r} in job_facts_live")
    return sql.replace(old, new)


def _cte(sql: str, name: str) -> str:
    """The text of a CTE of the view, from its name to the comma after it."""
    start = sql.index(f"{name} AS (\n")
    return sql[start : sql.index("),\n", start) + 3]


def _field(name: str) -> str:
    return f"json_extract(t.value, '$.{name}')"


def job_facts(postgresql: bool, *, by_job: bool) -> str:
    """`CREATE VIEW job_facts_live` as revision 0021 made it, or as this one makes it."""
    sql = str(v21.job_facts(postgresql, looked_up=True))
    if not by_job:
        return sql
    totals = _cte(sql, "checkpoint_totals")
    sql = _once(_once(sql, _cte(sql, "latest_checkpoint"), ""), totals, "")
    if postgresql:
        body = totals[totals.index("    SELECT\n") : totals.rindex("    GROUP BY job_id")]
        body = _once(body, "        job_id,\n", "")
        body = _once(
            body, "    FROM checkpoint_facts\n", "    FROM checkpoint_facts f\n    WHERE f.job_id = j.id\n"
        )
        lateral = (
            "-- Each job's totals over its rows of checkpoint_facts, for the jobs kept only.\n"
            f"LEFT JOIN LATERAL (\n{body}) t ON true"
        )
        return _once(_once(sql, LATEST_JOIN, POSTGRESQL_LATEST), TOTALS_JOIN, lateral)
    sql = _once(_once(sql, LATEST_JOIN, SQLITE_LATEST), TOTALS_JOIN, SQLITE_TOTALS)
    for name in ("checkpoint_count", "live_checkpoint_count", "first_checkpoint_at", "last_checkpoint_at"):
        sql = re.sub(rf"\bt\.{name}\b", _field(name), sql)
    for name, part in (("checkpoints_size_bytes", "size"), ("live_size_bytes", "live")):
        sql = re.sub(
            rf"\bt\.{name}\b", f"({_field(part + '_high')} * 4294967296 + {_field(part + '_low')})", sql
        )
    return sql


def _recreate(*, by_job: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    sql = job_facts(postgresql, by_job=by_job)
    if postgresql:  # in place, in the schema revision 0017 moved it to: grants and description stay
        head = "CREATE VIEW job_facts_live AS"
        op.execute(sql.replace(head, "CREATE OR REPLACE VIEW archiver_internal.job_facts_live AS", 1))
    else:
        op.execute("DROP VIEW job_facts_live")
        op.execute(sql)


def upgrade() -> None:
    _recreate(by_job=True)


def downgrade() -> None:
    _recreate(by_job=False)
