"""`project_storage_daily_live` tells a checkpoint's first version by its history, instead of grouping every version.

Why: (issue 21) a sync rewrites `project_storage_daily` after any change (every night that reads a
running job's checkpoints), and its view found each checkpoint's first version by grouping all the
versions of every checkpoint for their earliest start, then joining each version back to that:
PostgreSQL did the join as a nested loop of an index probe per checkpoint. A version is the first
when no version of its checkpoint in `checkpoint_history` began before it: the archive writes a
version to history only as a later one replaces it, so every version in history began before the
current one (`archiver.versioning`), and the current one is the first exactly when history holds
none. One probe of history's primary key (id, valid_from) per version, mostly into nothing.
Computing the view over 92,520 checkpoints, four times each: SQLite 419-431 to 293-316 ms,
PostgreSQL 521-561 to 329-366 ms. Its columns and rows are unchanged; on PostgreSQL it is replaced
in place, keeping its grants and description.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op
from alembic.util import load_python_file

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v13, v16 = _load("0013"), _load("0016")

GROUPED = """\
WITH RECURSIVE first_version AS (
    SELECT id, MIN(valid_from) AS valid_from FROM checkpoint_versions GROUP BY id
),
spans AS ("""

FIRST = "        CASE WHEN v.valid_from = f.valid_from\n"
FIRST_BY_HISTORY = (
    "        CASE WHEN NOT EXISTS (\n"
    "            SELECT 1 FROM checkpoint_history h WHERE h.id = v.id AND h.valid_from < v.valid_from\n"
    "        )\n"
)
JOINED = "    JOIN first_version f ON f.id = v.id\n"


def storage(postgresql: bool, *, by_history: bool) -> str:
    """`CREATE VIEW project_storage_daily_live` as revision 0016 made it, or as this one makes it."""
    sql = str(v16._create(postgresql, by_day=True))
    if not by_history:
        return sql
    sql = v13._replace(sql, GROUPED, "WITH RECURSIVE spans AS (")
    sql = v13._replace(sql, FIRST, FIRST_BY_HISTORY)
    return str(v13._replace(sql, JOINED, ""))


def _recreate(*, by_history: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    sql = storage(postgresql, by_history=by_history)
    head = "CREATE VIEW project_storage_daily_live AS"
    assert sql.startswith(head)
    if postgresql:  # in place, in the schema revision 0017 moved it to: grants and description stay
        op.execute(
            sql.replace(head, "CREATE OR REPLACE VIEW archiver_internal.project_storage_daily_live AS", 1)
        )
    else:
        op.execute("DROP VIEW project_storage_daily_live")
        op.execute(sql)


def upgrade() -> None:
    _recreate(by_history=True)


def downgrade() -> None:
    _recreate(by_history=False)
