"""Store SQLite timestamps as `2026-11-27 03:00:00.000000`: the text BI tools compare against.

Why: 0007 spelled SQLite timestamps `2026-11-27T03:00:00.000000+00:00` so that readers would see
the offset. But BI tools (Superset, Metabase, Datasette) filter with literals such as
`'2026-11-27 00:00:00.000000'` or `datetime('now', '-7 days')`, and text comparison puts `T` after
the space: "checkpoints deleted in the last 7 days" was 0 rows on SQLite and 3,398 on PostgreSQL
(issue 22). This is the form of SQLite's own `datetime()`, SQLAlchemy's `DateTime` and those
literals, fixed-width, so text order is still time order; every timestamp in the archive is UTC
(docs/bi.md and the README say so; read it with `utc=True` in pandas).

This revision rewrites every timestamp column (those SQLite declares DATETIME) of every table in
place, history tables included; text of any other shape is left alone. PostgreSQL is untouched.
The downgrade writes 0007's spelling back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic.util import load_python_file

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v7 = _load("0007")  # the rewrite of every timestamp column, and both spellings


def upgrade() -> None:
    v7.downgrade()  # 0007's offset spelling back to plain text


def downgrade() -> None:
    v7.upgrade()
