"""Read the archive: one statement at a time, read-only, enforced by the database.

`archiver query` and the reports go through `results`. A statement that plainly writes is
refused before it is sent; whatever gets past that still cannot write, because the database
itself is told so:

- SQLite: `PRAGMA query_only = ON` on the connection, and the driver runs one statement only.
- PostgreSQL: a READ ONLY transaction, and the statement goes by the extended protocol, which
  carries exactly one statement (so `SELECT 1; COMMIT; DELETE ...` cannot step outside it).

The read runs with the session in UTC, so date arithmetic agrees on both databases, and is
rolled back at the end.

A statement can be given a time limit (`archiver query --timeout`): PostgreSQL's own
`statement_timeout`, set for the read-only transaction; on SQLite a progress handler that stops
the statement once its time is spent. Only time in the database counts: a pager that holds the
rows unread for an hour stops nothing.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from archiver import asof, db, durations, migrate
from archiver.errors import DatabaseUnavailable, QueryError, QueryTimeout
from archiver.schema import sync_runs

READ_KEYWORDS = ("SELECT", "WITH", "VALUES", "EXPLAIN", "TABLE")

# Exactly how the archive writes timestamps into SQLite (schema.sqlite_text): such text is a UTC instant.
_SQLITE_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}")
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
# SQLite calls the progress handler every this many virtual machine steps: well under a millisecond.
SQLITE_PROGRESS_STEPS = 10_000
POSTGRES_MAX_TIMEOUT_MS = 2**31 - 1  # statement_timeout is an int of milliseconds
_VIEWS_HINT = (
    "the views are checkpoint_facts, job_facts and project_storage_daily; "
    "docs/schema.md describes every table and column"
)


@dataclass
class Rows:
    """A statement's column names and its rows, fetched as they are iterated."""

    columns: list[str]
    rows: Iterator[tuple[Any, ...]]


class Deadline:
    """The database time one statement may take (None: no limit), counted only while the database works."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.server_seconds: float | None = None  # the database's own stricter limit, when it has one
        self.spent = 0.0
        self._since: float | None = None

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Count the time spent in this block as the database's."""
        self._since = time.monotonic()
        try:
            yield
        finally:
            self.spent += time.monotonic() - self._since
            self._since = None

    def passed(self) -> bool:
        """Whether the statement has used up its time (SQLite's progress handler stops it when True)."""
        running = 0.0 if self._since is None else time.monotonic() - self._since
        return self.seconds is not None and self.spent + running >= self.seconds


def open_archive(database_url: str) -> Engine:
    """Open an existing, up-to-date archive for reading; never create or migrate one."""
    engine = db.open_existing(database_url)
    migrate.require_current(engine)
    return engine


def before_first_sync(engine: Engine, as_of: datetime) -> str | None:
    """Why the archive knew nothing at `as_of`, when it is before its first sync started; else None."""
    with read_only(engine) as connection:
        first = connection.execute(sa.select(sa.func.min(sync_runs.c.started_at))).scalar()
    if first is None:
        return f"--as-of {as_of.isoformat()}: the archive has no sync yet, so it held nothing then"
    if as_of < first:
        return (
            f"--as-of {as_of.isoformat()} is before the archive's first sync, which started "
            f"{first.isoformat()}: it held nothing then"
        )
    return None


def check_read_only(sql: str) -> None:
    """Refuse, with the reason, a statement that is empty or does not start like a read."""
    rest = sql[_LEADING_NOISE.match(sql).end() :]  # type: ignore[union-attr]  # the pattern matches ""
    word = _FIRST_WORD.match(rest)
    if word is None:
        raise QueryError("no SQL statement given; e.g. archiver query 'SELECT * FROM job_facts LIMIT 5'")
    if word.group().upper() not in READ_KEYWORDS:
        raise QueryError(
            f"archiver query only reads, and {word.group().upper()} is not a read: give one "
            f"{', '.join(READ_KEYWORDS[:-1])} or {READ_KEYWORDS[-1]} statement "
            "(`archiver sync` is what writes to the archive)"
        )


@contextmanager
def read_only(engine: Engine, as_of: datetime | None = None) -> Iterator[Connection]:
    """A connection whose database refuses writes, rolled back and restored on exit.

    With `as_of`, every table and view name means its state at that instant, by temporary views
    (see `archiver.asof`); `results` rewrites a SQL statement instead, which creates nothing.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if not sqlite:
            connection.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        if as_of is not None:
            asof.shadow(connection, as_of)  # temporary views: created before the database refuses writes
        connection.exec_driver_sql("PRAGMA query_only = ON" if sqlite else "SET TRANSACTION READ ONLY")
        try:
            yield connection
        finally:
            connection.rollback()
            if sqlite:  # the pooled connection goes back writable
                connection.exec_driver_sql("PRAGMA query_only = OFF")
                connection.rollback()


def _server_timeout_ms(connection: Connection) -> int:
    """The session's own statement_timeout in milliseconds (0: none), as the server set it."""
    value = connection.exec_driver_sql(
        "SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'"
    ).scalar_one()
    return int(value)


@contextmanager
def time_limit(connection: Connection, deadline: Deadline) -> Iterator[None]:
    """Make the database stop a statement that overruns `deadline` (inside a transaction on PostgreSQL)."""
    if deadline.seconds is None:
        yield
    elif connection.dialect.name == "postgresql":
        milliseconds = max(1, math.ceil(deadline.seconds * 1000))
        # A stricter limit the server already sets (for the role or the database) stays in force.
        server = _server_timeout_ms(connection)
        if 0 < server <= milliseconds:
            deadline.server_seconds = server / 1000
        elif milliseconds <= POSTGRES_MAX_TIMEOUT_MS:
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
        yield
    else:
        raw: Any = connection.connection.driver_connection
        raw.set_progress_handler(deadline.passed, SQLITE_PROGRESS_STEPS)
        try:
            yield
        finally:
            raw.set_progress_handler(None, 0)


@contextmanager
def results(
    engine: Engine,
    statement: str | sa.Select[Any],
    as_of: datetime | None = None,
    timeout: float | None = None,
) -> Iterator[Rows]:
    """Run one read-only statement (SQL text, or a select over the views) and yield its rows.

    A statement that spends more than `timeout` seconds in the database is stopped (QueryTimeout).
    Other database errors, raised when executing or while iterating, become QueryError (the
    statement is at fault) or DatabaseUnavailable (the database is).
    """
    if isinstance(statement, str):
        check_read_only(statement)
    deadline = Deadline(timeout)
    # SQL text is rewritten (nothing created: a read-only role, a standby); other statements need views.
    rewritten = as_of is not None and isinstance(statement, str) and asof.can_rewrite(statement)
    with read_only(engine, None if rewritten else as_of) as connection, time_limit(connection, deadline):
        if rewritten:
            assert as_of is not None and isinstance(statement, str)
            statement = asof.rewrite(connection, as_of, statement)
        dbapi_error: type[Exception] = getattr(connection.dialect.dbapi, "Error", sa.exc.DBAPIError)
        try:
            with deadline.counting():
                rows = _execute(connection, statement)
            yield Rows(rows.columns, _counted(rows.rows, deadline))
        except (sa.exc.DBAPIError, dbapi_error) as exc:
            raise _explain(exc, connection.dialect.name, deadline) from None


def _execute(connection: Connection, statement: str | sa.Select[Any]) -> Rows:
    if isinstance(statement, str):
        return _run_text(connection, statement)
    result = connection.execute(statement)
    return Rows(list(result.keys()), (tuple(row) for row in result))


def _counted(rows: Iterator[tuple[Any, ...]], deadline: Deadline) -> Iterator[tuple[Any, ...]]:
    """Yield the rows, counting the time spent fetching each (SQLite computes rows as they are fetched)."""
    while True:
        with deadline.counting():
            row = next(rows, None)
        if row is None:
            return
        yield row


def _run_text(connection: Connection, sql: str) -> Rows:
    # The driver's own cursor, not SQLAlchemy's text(): `:name` and `%` in the user's SQL stay
    # literal, and on PostgreSQL `prepare=True` forces the one-statement extended protocol.
    raw: Any = connection.connection.driver_connection
    cursor = raw.cursor()
    if connection.dialect.name == "postgresql":
        cursor.execute(sql, prepare=True)
    else:
        cursor.execute(sql)
    columns = [column[0] for column in cursor.description or ()]
    convert = _sqlite_value if connection.dialect.name == "sqlite" else _value
    return Rows(columns, (tuple(convert(value) for value in row) for row in iter(cursor.fetchone, None)))


def _value(value: Any) -> Any:
    return value


def _sqlite_value(value: Any) -> Any:
    """Read SQLite's timestamp text as the UTC instant it is, as PostgreSQL would return it."""
    if isinstance(value, str) and len(value) == 26 and _SQLITE_TIMESTAMP.fullmatch(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def _explain(exc: BaseException, dialect: str, deadline: Deadline) -> Exception:
    """Turn a database error into a message that says what to change."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip() or type(original).__name__
    lowered = text.lower()
    sqlstate = getattr(original, "sqlstate", None)
    # 57014 is query_canceled (statement_timeout among others); SQLite says "interrupted".
    if sqlstate == "57014" and deadline.server_seconds is not None:
        return QueryTimeout(
            f"query stopped after {durations.describe(deadline.server_seconds)} by the database's own "
            "statement_timeout (set for this role or database), stricter than --timeout: narrow it (a WHERE, "
            "a LIMIT, a view), or ask the database's owner for a longer statement_timeout"
        )
    if deadline.passed() and (sqlstate == "57014" or lowered == "interrupted"):
        return QueryTimeout(
            f"query stopped after {durations.describe(deadline.seconds or 0)} (--timeout): narrow it (a WHERE, "
            "a LIMIT, a view), or give it longer with --timeout (0 for no limit)"
        )
    if sqlstate == "25006" or "readonly database" in lowered or "read-only transaction" in lowered:
        return QueryError(
            "archiver query only reads, and the database refused a write "
            f"({text.splitlines()[0]}); `archiver sync` is what writes to the archive"
        )
    if "one statement at a time" in lowered or "multiple commands" in lowered:
        return QueryError("archiver query runs one statement at a time: remove the `;` and what follows it")
    unavailable = (
        # No SQLSTATE: the driver lost the server; 08 connection, 53 resources, 57 shutdown or cancel.
        sqlstate is None or sqlstate[:2] in ("08", "53", "57")
        if dialect == "postgresql"
        else "database is locked" in lowered or "unable to open" in lowered or "disk i/o" in lowered
    )
    if unavailable:
        return DatabaseUnavailable(f"the database failed while reading: {text.splitlines()[0][:300]}")
    hint = f"\nhint: {_VIEWS_HINT}" if "no such" in lowered or "does not exist" in lowered else ""
    return QueryError(f"the database rejected the statement: {text}{hint}")
