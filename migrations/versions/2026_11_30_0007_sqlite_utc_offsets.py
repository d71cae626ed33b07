"""Store SQLite timestamps as ISO 8601 with their UTC offset: `2026-01-05T21:17:36.000000+00:00`.

Why: SQLite has no time zones, and the archive wrote its UTC instants as naive text
(`2026-01-05 21:17:36.000000`), which pandas, Datasette and BI tools read as naive or local
times (issue 11); PostgreSQL's `timestamptz` never had the problem. The new text says UTC, SQLite's
date functions read it as they read the old, and being of one width it still sorts and compares
as time does.

This revision rewrites every timestamp column (those SQLite declares DATETIME) of every table in
place, history tables included, whichever revision made them; text of any other shape is left
alone. PostgreSQL is untouched. The downgrade writes the old spelling back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DATE, _TIME = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]", "[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
_MICROS = "[0-9][0-9][0-9][0-9][0-9][0-9]"
NAIVE = f"{_DATE} {_TIME}.{_MICROS}"  # GLOB patterns: '.' and '+' are literal
WITH_OFFSET = f"{_DATE}T{_TIME}.{_MICROS}+00:00"


def _timestamp_columns() -> dict[str, list[str]]:
    """Every table's DATETIME columns, as the database declares them."""
    bind = op.get_bind()
    tables = bind.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).scalars()
    found: dict[str, list[str]] = {}
    for table in list(tables):
        columns = bind.exec_driver_sql(f'PRAGMA table_info("{table}")').all()
        if names := [column[1] for column in columns if str(column[2]).upper() == "DATETIME"]:
            found[table] = names
    return found


def _rewrite(pattern: str, spelling: str) -> None:
    """Respell every timestamp matching `pattern` as `spelling` (SQL of the value `{c}`)."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in _timestamp_columns().items():
        sets = ", ".join(
            f"{c} = CASE WHEN {c} GLOB '{pattern}' THEN {spelling.format(c=c)} ELSE {c} END"
            for c in (f'"{name}"' for name in columns)
        )
        matching = " OR ".join(f"\"{name}\" GLOB '{pattern}'" for name in columns)
        op.execute(f'UPDATE "{table}" SET {sets} WHERE {matching}')  # noqa: S608 (names from the catalog)


def upgrade() -> None:
    _rewrite(NAIVE, "substr({c}, 1, 10) || 'T' || substr({c}, 12) || '+00:00'")


def downgrade() -> None:
    _rewrite(WITH_OFFSET, "substr({c}, 1, 10) || ' ' || substr({c}, 12, 15)")
