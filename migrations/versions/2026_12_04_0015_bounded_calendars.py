"""The daily facts cover at most the ten years before today: a timestamp from year 1 no longer makes millions of rows.

Why: (issue 22) the facts tables are computed at the end of every sync (revision 0014), and a
timestamp the API sends as any valid date (Go's zero time `0001-01-01T00:00:00Z`, or an `updated_at`
in year 9999) made `project_storage_daily` a row per day since year 1 for its project, and
`gpu_hours_daily` a row per day of a run millennia long: a test's archive grew past 1.4 GB in one
refresh. Now:

- `project_storage_daily` starts no earlier than 3,652 days before today; what happened before
  (checkpoints created, deleted) is counted on that first day, so every day's totals are unchanged;
- `gpu_hours_daily` counts a run from no earlier than that day and to no later than the end of
  today: hours outside the window are not counted (a real run is never that long).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import op
from alembic.util import load_python_file

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v9, v12, v13, v14 = _load("0009"), _load("0012"), _load("0013"), _load("0014")

DAYS = 3652  # ten years


def first_day(d: Any) -> str:
    """The first day the daily facts cover: `DAYS` before today (UTC)."""
    sqlite = d.now == "'now'"
    return f"date({d.today}, '-{DAYS} days')" if sqlite else f"{d.today} - {DAYS}"


def storage(d: Any) -> str:
    """`project_storage_daily_live` from `first_day` on, earlier events counted on that day."""
    sql = v14._renamed(v13.project_storage_daily(d), "project_storage_daily")
    clamped = d.latest("day", first_day(d))
    sql = v13._replace(
        sql,
        "    SELECT project_id, day, SUM(checkpoints)",
        f"    SELECT project_id, {clamped} AS day, SUM(checkpoints)",
    )
    sql = v13._replace(
        sql,
        "    FROM events\n    GROUP BY project_id, day\n",
        f"    FROM events\n    GROUP BY project_id, {clamped}\n",
    )
    start = d.latest("MIN(first_day)", first_day(d))
    return str(
        v13._replace(sql, "SELECT MIN(first_day) FROM project_start", f"SELECT {start} FROM project_start")  # noqa: S608
    )


def gpu_hours(d: Any) -> str:
    """`gpu_hours_daily_live` counting each run from `first_day` to the end of today at most."""
    sql = v14._renamed(v13.gpu_hours_daily(d), "gpu_hours_daily")
    since = d.day_start(first_day(d))
    sql = v13._replace(
        sql, "        j.created_at AS run_from,", f"        {d.latest('j.created_at', since)} AS run_from,"
    )
    until = d.earliest("run_to", d.day_start(d.next_day(d.today)))
    return str(
        v13._replace(
            sql,
            "    SELECT job_id, run_from, run_to, node_count FROM runs WHERE run_to > run_from",
            f"    SELECT job_id, run_from, {until} AS run_to, node_count FROM runs WHERE {until} > run_from",  # noqa: S608
        )
    )


def _recreate(bounded: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    d9, d12 = (v9.PostgreSQL, v12.PostgreSQL) if postgresql else (v9.SQLite, v12.SQLite)
    views = v14._views(postgresql)
    for name, create in (("project_storage_daily", storage(d9)), ("gpu_hours_daily", gpu_hours(d12))):
        op.execute(f"DROP VIEW {name}_live")
        op.execute(create if bounded else v14._renamed(views[name], name))


def upgrade() -> None:
    _recreate(bounded=True)


def downgrade() -> None:
    _recreate(bounded=False)
