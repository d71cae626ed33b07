"""`project_storage_daily_live` finds each day's team by joining the periods of the project's versions.

Why: (issue 21) a sync rewrites `project_storage_daily` whole on each new UTC day and after any change,
and a first load ends with it. Its view found the team that held a project on each day with three
correlated subqueries per row (the latest version of the project begun before the day ended, else its
first, then that version's team): on PostgreSQL about 0.15 s of the 0.39-0.40 s computing it over
92,520 checkpoints (12,798 rows), at the end of every first load and every night. Each version of a
project now carries the span of day-ends it names the team for (from its start, or from the first
day for the first version, up to the next version's start), and each day is joined to the one span
that holds its end. Computing the view over 92,520 checkpoints: PostgreSQL 0.39-0.40 to 0.24 s,
SQLite 0.33-0.35 to 0.29 s. Its columns and rows are unchanged; on PostgreSQL it is replaced in place,
keeping its grants and description.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op
from alembic.util import load_python_file

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v22 = _load("0022")

TEAM_BY_SUBQUERIES_START = "    (\n        SELECT v.team_name FROM training_project_versions v\n"
TEAM_BY_SUBQUERIES_END = ") AS team_name,\n"
TEAM_BY_PERIOD = "    t.team_name AS team_name,\n"
FROM = "FROM running\n"
HEAD = "CREATE VIEW project_storage_daily_live AS\nWITH RECURSIVE "
PERIODS = """\
team_periods AS (
    -- Each version of a project, with the ends of the days it names the team of: those after it
    -- began (any, for the first version), up to when the next one began.
    SELECT
        id,
        team_name,
        CASE WHEN ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from) = 1 THEN NULL ELSE valid_from END AS since,
        LEAD(valid_from) OVER (PARTITION BY id ORDER BY valid_from) AS until
    FROM training_project_versions
),
"""


def day_end(postgresql: bool) -> str:
    """The instant a row's day ends (UTC), as revision 0016 wrote it."""
    if postgresql:
        return "(CAST(running.day + 1 AS TIMESTAMP) AT TIME ZONE 'UTC')"
    return "(date(running.day, '+1 day') || ' 00:00:00.000000')"


def storage(postgresql: bool, *, by_periods: bool) -> str:
    """`CREATE VIEW project_storage_daily_live` as revision 0022 made it, or as this one makes it."""
    sql = str(v22.storage(postgresql, by_history=True))
    if not by_periods:
        return sql
    start = sql.index(TEAM_BY_SUBQUERIES_START)
    end = sql.index(TEAM_BY_SUBQUERIES_END, start) + len(TEAM_BY_SUBQUERIES_END)
    sql = sql[:start] + TEAM_BY_PERIOD + sql[end:]
    assert sql.startswith(HEAD) and sql.endswith(FROM) and sql.count(FROM) == 1
    ends = day_end(postgresql)
    joined = (
        f"LEFT JOIN team_periods t ON t.id = running.project_id\n"
        f"    AND (t.since IS NULL OR t.since < {ends}) AND (t.until IS NULL OR {ends} <= t.until)\n"
    )
    return HEAD + PERIODS + sql[len(HEAD) :] + joined


def _recreate(*, by_periods: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    sql = storage(postgresql, by_periods=by_periods)
    head = "CREATE VIEW project_storage_daily_live AS"
    if postgresql:  # in place, in the schema revision 0017 moved it to: grants and description stay
        op.execute(
            sql.replace(head, "CREATE OR REPLACE VIEW archiver_internal.project_storage_daily_live AS", 1)
        )
    else:
        op.execute("DROP VIEW project_storage_daily_live")
        op.execute(sql)


def upgrade() -> None:
    _recreate(by_periods=True)


def downgrade() -> None:
    _recreate(by_periods=False)
