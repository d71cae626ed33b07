"""`project_storage_daily.team_name` is the project's team on that day, not today's.

Why: (issue 22) a project moved from one team to another took its whole storage history with it:
a chart of storage per team over the year put every earlier day under the new team. The team of a
day is the one in the project's version current at the end of that UTC day (`training_project_versions`);
for a day before the archive first saw the project, its earliest known version's. `project_name`
and `project_label` stay today's: they name the project, the team is what the day is charged to.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import op
from alembic.util import load_python_file

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v9, v12, v13, v15 = _load("0009"), _load("0012"), _load("0013"), _load("0015")

VIEW = "project_storage_daily_live"


def team_of_the_day(d: Any) -> str:
    """The team in the project's version current at the end of the day, else in its earliest version."""
    day_end = d.day_start(d.next_day("running.day"))
    versions = "training_project_versions w WHERE w.id = running.project_id"
    started = (
        f"COALESCE((SELECT MAX(w.valid_from) FROM {versions} AND w.valid_from < {day_end}), "  # noqa: S608
        f"(SELECT MIN(w.valid_from) FROM {versions}))"
    )
    return f"""(
        SELECT v.team_name FROM training_project_versions v
        WHERE v.id = running.project_id AND v.valid_from = {started}
    )"""  # noqa: S608 (constant fragments, no input)


def _create(postgresql: bool, *, by_day: bool) -> str:
    d9, d12 = (v9.PostgreSQL, v12.PostgreSQL) if postgresql else (v9.SQLite, v12.SQLite)
    sql = v15.storage(d9)
    if by_day:
        sql = v13._replace(
            sql, "    team_name,\n    day,\n", f"    {team_of_the_day(d12)} AS team_name,\n    day,\n"
        )
    return str(sql)


def _recreate(*, by_day: bool) -> None:
    op.execute(f"DROP VIEW {VIEW}")
    op.execute(_create(op.get_bind().dialect.name == "postgresql", by_day=by_day))


def upgrade() -> None:
    _recreate(by_day=True)


def downgrade() -> None:
    _recreate(by_day=False)
