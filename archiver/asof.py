"""The archive as it stood at an instant: every table and view name made to mean its state then.

For one read transaction, temporary views shadow the archive's own names (both databases look
up temporary objects first):

- a versioned table (`checkpoints`, ...) becomes the version of each row that was current at the
  instant, from its history and current rows (rows first seen later are absent);
- a history table keeps the versions that had ended by then; the run ledger, the responses and
  the LoRA configs keep what existed by then;
- every view is recreated from the database's own definition, so it reads those shadows, with
  "now" (`CURRENT_TIMESTAMP` on PostgreSQL, `'now'` on SQLite) meaning the instant; a facts
  table (`checkpoint_facts`, ...) becomes what its `_live` view computes then.

Bookkeeping that was never versioned (`last_seen_at`, `checkpoints_fetched_at`, ...) is capped at
the instant. Nothing is written: the views vanish when the transaction is rolled back. The SQL
here is built from the schema's own names and a literal made from a datetime, never from input.
"""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.facts import LIVE
from archiver.schema import (
    INTERNAL_SCHEMA,
    VERSIONED,
    UTCDateTime,
    Versioned,
    api_responses,
    lora_adapter_configs,
    sync_errors,
    sync_runs,
)
from archiver.views import INTERNAL

# Bookkeeping timestamps of versioned tables, capped at the instant: they were never versioned.
_CAPPED = ("last_seen_at", "checkpoints_fetched_at")


def shadow(connection: Connection, at: datetime) -> None:
    """Make every archive table and view name mean its state at `at`, in this connection's transaction.

    Temporary views: they need the TEMPORARY privilege and a writable session. `rewrite` needs neither.
    """
    for name, body in definitions(connection, at):
        connection.exec_driver_sql(_temp(name, body))


def rewrite(connection: Connection, at: datetime, sql: str) -> str:
    """`sql` with every archive name meaning its state at `at`, as common table expressions before it.

    Nothing is created: it runs in a read-only transaction, for a role without the TEMPORARY
    privilege, and on a hot standby. A statement that starts with its own WITH gets the
    archive's expressions first in the same list (RECURSIVE, if it says so, covers them too).
    """
    ctes = ",\n".join(f'"{name}" AS ({body})' for name, body in definitions(connection, at))
    if (own := _OWN_WITH.match(sql)) is not None:
        return f"{own[1]}WITH{own[2] or ''} {ctes},\n{sql[own.end() :]}"
    return f"WITH {ctes}\n{sql}"


def can_rewrite(sql: str) -> bool:
    """Whether `rewrite` can put expressions before `sql`: not before EXPLAIN, whose options come first."""
    return _EXPLAIN.match(sql) is None


# A statement's own WITH, after comments and blanks: the archive's expressions join its list.
_OWN_WITH = re.compile(r"((?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*)WITH(\s+RECURSIVE)?\s+", re.I | re.S)
_EXPLAIN = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*EXPLAIN\b", re.I | re.S)


def definitions(connection: Connection, at: datetime) -> list[tuple[str, str]]:
    """(name, the SELECT it means as of `at`) for every table and view shadowed, dependencies first."""
    dialect = connection.dialect.name
    schema = "main" if dialect == "sqlite" else connection.exec_driver_sql("SELECT current_schema()").scalar()
    real = _Names(str(schema), INTERNAL_SCHEMA if dialect == "postgresql" else str(schema))
    instant = _literal(connection, at)
    views = _view_definitions(connection)
    existing = set(sa.inspect(connection).get_table_names())  # the bookkeeping's schema is on the path
    found: list[tuple[str, str]] = []
    for versioned in VERSIONED:
        if versioned.table.name in existing:
            found.append(_current_as_of(versioned, real, instant))
            found.append(_history_as_of(versioned, real, instant))
    for table, started in (
        (sync_runs, "started_at"),
        (sync_errors, "occurred_at"),
        (lora_adapter_configs, "first_seen_at"),
    ):
        if table.name in existing:
            found.append((table.name, f"SELECT * FROM {real(table.name)} WHERE {started} <= {instant}"))  # noqa: S608
    if api_responses.name in existing:
        found.append(
            (
                api_responses.name,
                f"SELECT * FROM {real(api_responses.name)} WHERE sync_run_id IN "  # noqa: S608
                f"(SELECT id FROM {real(sync_runs.name)} WHERE started_at <= {instant})",
            )
        )
    now = "CURRENT_TIMESTAMP" if dialect == "postgresql" else "'now'"
    for name, body in views:
        found.append((name, body.replace(now, instant)))
        if name.endswith(LIVE) and name.removesuffix(LIVE) in existing:
            # A facts table holds the last refresh's rows: as of the instant, its view computes them.
            found.append((name.removesuffix(LIVE), f'SELECT * FROM "{name}"'))  # noqa: S608
    return found


class _Names:
    """Qualify a name with the schema it lives in, past the temporary views that shadow it:
    the archive's own, or for the bookkeeping on PostgreSQL, its schema (revision 0017)."""

    def __init__(self, schema: str, internal: str) -> None:
        self.schema, self.internal = schema, internal

    def __call__(self, name: str) -> str:
        return f'"{self.internal if name in INTERNAL else self.schema}"."{name}"'


def _temp(name: str, select: str) -> str:
    return f'CREATE TEMPORARY VIEW "{name}" AS {select}'


def _literal(connection: Connection, at: datetime) -> str:
    """The instant as a SQL literal, in the form the database stores timestamps."""
    if connection.dialect.name == "postgresql":
        return f"CAST('{at.isoformat()}' AS TIMESTAMP WITH TIME ZONE)"
    process = UTCDateTime().bind_processor(connection.dialect)
    assert process is not None
    return f"'{process(at)}'"


def _current_as_of(versioned: Versioned, real: _Names, instant: str) -> tuple[str, str]:
    """The versioned table as of the instant: each row's version then, if it had been seen by then."""
    table, history = versioned.table.name, versioned.history.name
    values = [*versioned.values, "valid_from"]
    picked = ", ".join(["id", *values])
    versions = (
        f"SELECT {picked} FROM {real(history)} WHERE valid_from <= {instant} AND valid_to > {instant} "  # noqa: S608
        f"UNION ALL SELECT {picked} FROM {real(table)} WHERE valid_from <= {instant}"
    )
    columns = []
    for column in versioned.table.columns:
        if column.name in values:
            columns.append(f"v.{column.name}")
        elif column.name in _CAPPED:
            columns.append(
                f"CASE WHEN c.{column.name} > {instant} THEN {instant} ELSE c.{column.name} END AS {column.name}"
            )
        else:
            columns.append(f"c.{column.name}")
    return table, f"SELECT {', '.join(columns)} FROM {real(table)} c JOIN ({versions}) v ON v.id = c.id"  # noqa: S608


def _history_as_of(versioned: Versioned, real: _Names, instant: str) -> tuple[str, str]:
    """A history table as of the instant: the versions that had ended by then."""
    name = versioned.history.name
    return name, f"SELECT * FROM {real(name)} WHERE valid_to <= {instant}"  # noqa: S608


def _view_definitions(connection: Connection) -> list[tuple[str, str]]:
    """Every view of the archive as (name, the SELECT that defines it), dependencies first."""
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(
            "SELECT name, sql FROM main.sqlite_master WHERE type = 'view' ORDER BY rowid"
        ).all()
        return [(name, _CREATE_VIEW.sub("", sql, count=1)) for name, sql in rows]
    # A view can only depend on views that existed when it was made: creation (oid) order works.
    rows = connection.exec_driver_sql(
        "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'v' AND n.nspname IN (current_schema(), %(internal)s) ORDER BY c.oid",
        {"internal": INTERNAL_SCHEMA},
    ).all()
    return [(name, definition.rstrip().rstrip(";")) for name, definition in rows]


_CREATE_VIEW = re.compile(r"^\s*CREATE\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:\"[^\"]+\"|\S+)\s+AS\s+", re.I)
