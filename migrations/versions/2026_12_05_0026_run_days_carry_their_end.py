"""`gpu_hours_daily_live` walks each run's days carrying the run's end, instead of joining every run at each step.

Why: (issue 21) a sync rewrites the rows of `gpu_hours_daily` of the jobs still running and of those
written since, every night an organisation trains. The view makes a row per day of each run with a
recursive query, and each step of it joined the days made so far to every run again, to read where
the run ends: as many joins of every run as the longest run has days. PostgreSQL sorted all runs for
each (a merge join), 325 times over an archive whose longest run is 325 days: 0.6 s to rewrite the
rows of 12 jobs of 2,008, out of 1.3 s for the whole refresh of that night. Each day now carries its
run's end from the first day on, and a step reads it there. Its columns and rows are unchanged; on
PostgreSQL it is replaced in place, keeping its grants and description.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import op
from alembic.util import load_python_file

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v12, v13, v15 = _load("0012"), _load("0013"), _load("0015")


# The days of the runs, as revision 0012 made them and as this one does: {first} is a run's first day,
# {following} the day after a row's, {ends} the instant that day ends.
JOINED = (
    "    SELECT job_id, {first} AS day FROM spans\n    UNION ALL\n    SELECT s.job_id, {following}\n"
    "    FROM days s\n    JOIN spans r ON r.job_id = s.job_id\n    WHERE {ends} < r.run_to\n"
)
CARRYING = (
    "    SELECT job_id, {first} AS day, run_to FROM spans\n    UNION ALL\n    SELECT s.job_id, {following}, s.run_to\n"
    "    FROM days s\n    WHERE {ends} < s.run_to\n"
)


def gpu_hours(d: Any, *, carried: bool) -> str:
    """`CREATE VIEW gpu_hours_daily_live` as revision 0015 made it, or as this one makes it."""
    sql = str(v15.gpu_hours(d))
    if not carried:
        return sql
    following = d.next_day("s.day")
    parts = {"first": d.utc_day("run_from"), "following": following, "ends": d.day_start(following)}
    return str(v13._replace(sql, JOINED.format(**parts), CARRYING.format(**parts)))


def _recreate(*, carried: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    sql = gpu_hours(v12.PostgreSQL if postgresql else v12.SQLite, carried=carried)
    head = "CREATE VIEW gpu_hours_daily_live AS"
    assert sql.startswith(head)
    if postgresql:  # in place, in the schema revision 0017 moved it to: grants and description stay
        op.execute(sql.replace(head, "CREATE OR REPLACE VIEW archiver_internal.gpu_hours_daily_live AS", 1))
    else:
        op.execute("DROP VIEW gpu_hours_daily_live")
        op.execute(sql)


def upgrade() -> None:
    _recreate(carried=True)


def downgrade() -> None:
    _recreate(carried=False)
