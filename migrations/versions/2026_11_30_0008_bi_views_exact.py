"""Recreate the BI views: exact hours and sizes, target modules as text, storage and status from the API's own times.

Why: BI tools read the views of 0003 wrongly in five ways (issues 10 and 11):

- hours carried float noise on SQLite (`11.200000047683716` where PostgreSQL says `11.2`):
  julianday arithmetic. Both databases now count whole microseconds exactly and divide once, so
  they compute the same double.
- `lora_target_modules` is JSON, which BI tools cannot group or filter by:
  `lora_target_modules_text` is the list sorted and joined with commas (a regex stays as is).
- `project_storage_daily` counted a checkpoint from the day the archiver first saw it, so a new
  archive had one point per project while its checkpoints went back months, and it showed a
  checkpoint deleted and restored as live in between. A checkpoint now counts from its
  `created_at` (its first sighting if it has none) and is live in the versions of
  `checkpoint_versions` that are not deletions.
- `job_status_since` was the first sighting of the status, so a job that failed ten months ago had
  been failed for an hour. For a finished job it is now the job's `updated_at` in the version
  where the status first appeared, bounded by the sightings around it.
- a job's or a project's sizes summed past 2^63 - 1 failed every read of the view. PostgreSQL now
  sums as NUMERIC; SQLite sums the high and low 32 bits of each size apart, exact up to 2^63 - 1,
  a REAL beyond (SQLite turns integer arithmetic that overflows into REAL, its SUM raises).

The SQL is 0003's, loaded from its file and changed where said, so what stays is visibly the same.
Now is spelled `CURRENT_TIMESTAMP` (PostgreSQL) and `'now'` (SQLite) only, as in 0003.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from alembic import op
from alembic.util import load_python_file

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    """An earlier revision's module, read from its (frozen) file."""
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


bi = _load("0003")
VIEWS = bi.VIEWS
GIB, TERMINAL_STATUSES = bi.GIB, bi.TERMINAL_STATUSES


class PostgreSQL(bi.PostgreSQL):  # type: ignore[misc,name-defined]
    """0003's expressions, with exact hours and sums."""

    distinct = "IS DISTINCT FROM"

    @staticmethod
    def hours_between(start: str, end: str) -> str:
        return (
            f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) * 1000000 AS DOUBLE PRECISION) "
            "/ CAST(3600000000 AS DOUBLE PRECISION)"
        )

    @staticmethod
    def size_parts(size: str) -> list[str]:
        # NUMERIC: exact at any size, and a negated -2^63 cannot overflow.
        return [f"CAST({size} AS NUMERIC)"]

    @staticmethod
    def whole(parts: list[str]) -> str:
        return parts[0]

    @staticmethod
    def latest_known(*values: str) -> str:
        return f"GREATEST({', '.join(values)})"  # GREATEST ignores NULLs

    @staticmethod
    def modules_text(modules: str) -> str:
        # Sorted by code point, as SQLite sorts, whatever the database's collation.
        return (
            f"CASE jsonb_typeof({modules}) "  # noqa: S608 (constant fragments, no input)
            f"WHEN 'string' THEN {modules} #>> '{{}}' "
            """WHEN 'array' THEN COALESCE((SELECT string_agg(m.name, ',' ORDER BY m.name COLLATE "C") """
            f"FROM (SELECT DISTINCT e.name FROM jsonb_array_elements_text({modules}) AS e(name)) m), '') END"
        )


class SQLite(bi.SQLite):  # type: ignore[misc,name-defined]
    """0003's expressions, with exact hours and sums."""

    distinct = "IS NOT"

    @staticmethod
    def micros(ts: str) -> str:
        # Whole seconds, plus the fixed-width text's microseconds (none in 'now').
        return f"(CAST(strftime('%s', {ts}) AS INTEGER) * 1000000 + CAST(substr({ts}, 21, 6) AS INTEGER))"

    @staticmethod
    def hours_between(start: str, end: str) -> str:
        return f"CAST({SQLite.micros(end)} - {SQLite.micros(start)} AS REAL) / 3600000000.0"

    @staticmethod
    def size_parts(size: str) -> list[str]:
        # Each part's sum fits 64 bits for any number of rows an archive can hold.
        return [f"(({size}) >> 32)", f"(({size}) & 4294967295)"]

    @staticmethod
    def whole(parts: list[str]) -> str:
        return f"({parts[0]} * 4294967296 + {parts[1]})"

    @staticmethod
    def latest_known(*values: str) -> str:
        # max() is NULL if any argument is; '' sorts before every timestamp.
        known = ", ".join(f"COALESCE({value}, '')" for value in values)
        return f"NULLIF(max({known}), '')"

    @staticmethod
    def modules_text(modules: str) -> str:
        return (
            f"CASE json_type({modules}) "  # noqa: S608 (constant fragments, no input)
            f"WHEN 'text' THEN json_extract({modules}, '$') "
            "WHEN 'array' THEN COALESCE((SELECT group_concat(name, ',') FROM "
            f"(SELECT DISTINCT value AS name FROM json_each({modules}) ORDER BY name)), '') END"
        )


Dialect = type[PostgreSQL] | type[SQLite]


def exact_sum(d: Dialect, size: str) -> str:
    return d.whole([f"SUM({part})" for part in d.size_parts(size)])


def _replace(sql: str, old: str, new: str) -> str:
    """`sql` with `old`, which must occur exactly once, replaced by `new`."""
    assert sql.count(old) == 1, f"expected {old!r} once in 0003's view"
    return sql.replace(old, new)


def _replace_between(sql: str, start: str, end: str, new: str) -> str:
    """`sql` with the text from `start` up to `end` (kept) replaced by `new`."""
    assert sql.count(start) == 1 and sql.count(end) == 1, f"expected {start!r} and {end!r} once"
    head, rest = sql.split(start)
    return head + new + end + rest.split(end)[1]


def checkpoint_facts(d: Dialect) -> str:
    column = "    l.target_modules AS lora_target_modules,\n"
    text = f"    {d.modules_text('l.target_modules')} AS lora_target_modules_text,\n"
    return _replace(bi.checkpoint_facts(d), column, column + text)


# What job_facts reads of training_jobs. 0003 wrote `j.*`, which PostgreSQL expands when the view
# is made: recreated now, it would hold on to every column added since and block dropping them.
JOB_COLUMNS = (
    "id",
    "training_project_id",
    "instance_type_id",
    "name",
    "current_status",
    "error_message",
    "checkpoint_sync_status",
    "user_email",
    "created_at",
    "updated_at",
    "extra",
    "first_seen_at",
    "last_seen_at",
    "deleted_at",
)


def job_facts_0003(d: Dialect) -> str:
    """0003's job_facts, reading only the columns it uses."""
    columns = ", ".join(f"j.{name}" for name in JOB_COLUMNS)
    return _replace(bi.job_facts(d), "        j.*,\n", f"        {columns},\n")


def job_facts(d: Dialect) -> str:
    sql = _replace_between(
        job_facts_0003(d), "WITH status_since AS (", "checkpoint_totals AS (", status_since(d)
    )
    sql = _replace(
        sql,
        "CAST(SUM(size_bytes) AS BIGINT) AS checkpoints_size_bytes",
        f"{exact_sum(d, 'size_bytes')} AS checkpoints_size_bytes",
    )
    live = "CASE WHEN deleted_at IS NULL THEN size_bytes ELSE 0 END"
    return _replace(sql, f"CAST(SUM({live}) AS BIGINT)", exact_sum(d, live))


def status_since(d: Dialect) -> str:
    return f"""WITH job_versions AS (
    SELECT
        id,
        current_status,
        updated_at,
        valid_from,
        LAG(current_status) OVER (PARTITION BY id ORDER BY valid_from) AS previous_status,
        LAG(valid_from) OVER (PARTITION BY id ORDER BY valid_from) AS previous_from,
        ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from) AS position
    FROM training_job_versions
),
status_start AS (
    -- The version in which the job took on its current status: the last one whose status
    -- differs from the version before it (or its first).
    SELECT
        id,
        updated_at,
        valid_from,
        previous_from,
        ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from DESC) AS recency
    FROM job_versions
    WHERE position = 1 OR previous_status {d.distinct} current_status
),
status_since AS (
    -- A finished job says when it finished: its updated_at in that version, no earlier than the
    -- version before began and no later than the sync that saw it. Otherwise: that sync.
    SELECT
        s.id AS job_id,
        CASE WHEN j.current_status IN ({TERMINAL_STATUSES}) AND s.updated_at IS NOT NULL
            THEN {d.earliest("s.valid_from", d.latest_known("s.updated_at", "s.previous_from"))}
            ELSE s.valid_from
        END AS since
    FROM status_start s
    JOIN training_jobs j ON j.id = s.id
    WHERE s.recency = 1
),
"""  # noqa: S608 (constant fragments, no input)


def project_storage_daily(d: Dialect) -> str:
    # 0003's events came from checkpoint_facts, one span per checkpoint from its first sighting;
    # here they come from the spans of checkpoint_versions, and sizes are summed in parts.
    parts = d.size_parts("size_bytes")
    names = ["bytes"] if len(parts) == 1 else ["bytes_high", "bytes_low"]
    added = ", ".join(f"{part} AS {name}" for part, name in zip(parts, names, strict=True))
    removed = ", ".join(f"-{part}" for part in parts)
    daily = ", ".join(f"SUM(COALESCE({name}, 0)) AS {name}" for name in names)
    events = f"""WITH RECURSIVE first_version AS (
    SELECT id, MIN(valid_from) AS valid_from FROM checkpoint_versions GROUP BY id
),
spans AS (
    -- The versions in which a checkpoint existed: the first from its created_at, each until a
    -- sync saw it end, or its job or project was noticed gone (as checkpoint_facts counts it).
    SELECT
        j.training_project_id AS project_id,
        v.size_bytes AS size_bytes,
        CASE WHEN v.valid_from = f.valid_from
            THEN {d.earliest("v.created_at", "v.valid_from")}
            ELSE v.valid_from
        END AS live_from,
        {d.earliest("v.valid_to", "j.deleted_at", "p.deleted_at")} AS live_to
    FROM checkpoint_versions v
    JOIN first_version f ON f.id = v.id
    JOIN training_jobs j ON j.id = v.training_job_id
    JOIN training_projects p ON p.id = j.training_project_id
    WHERE v.deleted_at IS NULL
),
events AS (
    SELECT project_id, {d.utc_day("live_from")} AS day, 1 AS checkpoints, {added}
    FROM spans
    UNION ALL
    -- Ended on the day it began: never live at the end of a day.
    SELECT project_id, {d.latest(d.utc_day("live_from"), d.utc_day("live_to"))}, -1, {removed}
    FROM spans
    WHERE live_to IS NOT NULL
),
daily AS (
    SELECT project_id, day, SUM(checkpoints) AS checkpoints, {daily}
    FROM events
    GROUP BY project_id, day
),
"""  # noqa: S608 (constant fragments, no input)
    sql = _replace_between(
        bi.project_storage_daily(d), "WITH RECURSIVE events AS (", "project_start AS (", events
    )
    project_day = "SELECT id AS project_id, {} AS day FROM training_projects"
    sql = _replace(
        sql,
        project_day.format(d.utc_day("first_seen_at")),
        project_day.format(d.utc_day(d.earliest("created_at", "first_seen_at"))),
    )
    window = "SUM(COALESCE(e.{0}, 0)) OVER (PARTITION BY p.id ORDER BY c.day) AS {0}"
    sql = _replace(sql, window.format("bytes"), ",\n        ".join(window.format(name) for name in names))
    live_bytes = d.whole(names)
    sql = _replace(sql, "CAST(bytes AS BIGINT) AS live_size_bytes", f"{live_bytes} AS live_size_bytes")
    return _replace(sql, "CAST(bytes AS DOUBLE PRECISION)", f"CAST({live_bytes} AS DOUBLE PRECISION)")


def _recreate(dialect: Dialect, creators: Sequence[Callable[[Dialect], str]]) -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for create in creators:
        op.execute(create(dialect))


def _dialects() -> tuple[Dialect, Dialect]:
    """This revision's dialect, and 0003's."""
    if op.get_bind().dialect.name == "postgresql":
        return PostgreSQL, bi.PostgreSQL
    return SQLite, bi.SQLite


def upgrade() -> None:
    _recreate(_dialects()[0], (checkpoint_facts, job_facts, project_storage_daily))


def downgrade() -> None:
    _recreate(_dialects()[1], (bi.checkpoint_facts, job_facts_0003, bi.project_storage_daily))
