"""Feed many rows to the database at the driver's speed: the two halves of `db.upsert`.

SQLAlchemy's executemany builds a parameter dict and runs the type processors for every row
through several layers; at tens of thousands of rows per second that alone costs as much as the
database does. Here the statement is compiled once and the rows go to the driver as tuples,
converted by the same bind processors the dialect would use, so what is stored is identical.
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
import sqlite3
import weakref
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine

log = logging.getLogger("archiver.bulk")

Processor = Callable[[Any], Any]
_NOTHING = object()
# Whether the role may create temporary tables, asked once per engine (a run has one).
_may_stage: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def converters(table: sa.Table, columns: Sequence[str], dialect: Dialect) -> list[Processor | None]:
    """The dialect's bind processor of each column, or None where the value goes through as is."""
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns]


def driver_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], processors: Sequence[Processor | None]
) -> list[tuple[Any, ...]]:
    """Turn row dicts into tuples of driver values, in column order."""
    values_of = getter(columns)
    if not any(processors):
        return [values_of(row) for row in rows]
    # Per column to convert: its converter, the value converted last and what it became (the run's
    # timestamp is on every row: converted once), and whether a null goes through as it is.
    steps = [
        (index, process, [_NOTHING, None], _keeps_null(process))
        for index, process in enumerate(processors)
        if process
    ]
    converted = []
    for row in rows:
        values = list(values_of(row))
        for index, process, last, null_stays in steps:
            value = values[index]
            if value is None and null_stays:
                continue
            if value is last[0]:
                values[index] = last[1]
            else:
                last[0] = value
                values[index] = last[1] = process(value)
        converted.append(tuple(values))
    return converted


def getter(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A row's values of `names`, as a tuple (`itemgetter` of one name returns the value itself)."""
    if len(names) == 1:
        (name,) = names
        return lambda row: (row[name],)
    return operator.itemgetter(*names)


def _keeps_null(process: Processor) -> bool:
    """Whether a converter turns a null into a null (then nulls need not go through it)."""
    try:
        return process(None) is None
    except Exception:  # one that cannot take a null is asked only for the values it gets
        return False


def executemany(
    connection: Connection,
    statement: sa.Insert,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    batch_rows: int,
) -> None:
    """Run an INSERT with positional parameters (SQLite) for every row, many rows a statement.

    Not `executemany`: SQLite's driver lets go of the GIL around each row's step and must then win
    it back from the fetch threads, which keep it up to 5 ms each time (`sys.getswitchinterval`).
    Writing 10,000 rows then waited on the GIL 10,000 times. A statement of many rows waits once.
    The rows a full statement leaves go as statements of 256, 128, ... 1 rows (`_pieces`): a few
    waits, and a few statement texts for the driver's cache, however many rows are left.
    """
    sql, columns = _compiled(statement, connection.dialect, tuple(rows[0]))
    processors = converters(table, columns, connection.dialect)
    per_statement = _rows_per_statement(connection, len(columns))
    for start in range(0, len(rows), batch_rows):
        params = driver_rows(rows[start : start + batch_rows], columns, processors)
        at = 0
        for size in _pieces(len(params), per_statement):
            connection.exec_driver_sql(
                _many_rows(sql, len(columns), size),
                tuple(itertools.chain.from_iterable(params[at : at + size])),
            )
            at += size


def _pieces(rows: int, most: int) -> list[int]:
    """Split `rows` into statements of `most` rows, then of falling powers of two for the rest."""
    pieces = [most] * (rows // most)
    rest = rows % most
    while rest:
        size = 1 << (rest.bit_length() - 1)
        pieces.append(size)
        rest -= size
    return pieces


# Rows a multi-row statement holds at most: its text and its parameters grow with it.
MAX_ROWS_PER_STATEMENT = 500


def _rows_per_statement(connection: Connection, columns: int) -> int:
    """How many rows of `columns` values one statement may bind, within the SQLite library's limit."""
    driver = connection.connection.driver_connection
    limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if driver is not None else 999
    return max(1, min(MAX_ROWS_PER_STATEMENT, limit // columns))


@functools.lru_cache(maxsize=64)
def _many_rows(sql: str, columns: int, rows: int) -> str:
    """A one-row `INSERT ... VALUES (?, ...)` as a statement of `rows` rows, in order.

    SQLite upserts the rows of one statement one after another, as `executemany` does: a key
    listed twice is inserted, then updated, and the later row wins.
    """
    one = "(" + ", ".join("?" * columns) + ")"
    if sql.count(one) != 1 or sql.count("?") != columns:
        raise ValueError(f"expected one row of {columns} parameters in {sql[:80]!r}")
    return sql.replace(one, ", ".join([one] * rows))


@functools.lru_cache(maxsize=256)
def _compiled(
    statement: sa.Insert, dialect: Dialect, columns: tuple[str, ...]
) -> tuple[str, tuple[str, ...]]:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    order = compiled.positiontup
    assert order is not None and set(order) == set(columns), "expected one ? per column"
    return compiled.string, tuple(order)


def stage_table(table: sa.Table, columns: Sequence[str]) -> sa.TableClause:
    """The temporary table that stages `columns` of `table` (PostgreSQL)."""
    digest = zlib.crc32(",".join(columns).encode())
    return sa.table(f"archiver_stage_{table.name}_{digest:08x}", *(sa.column(name) for name in columns))


def can_stage(connection: Connection) -> bool:
    """Whether `stage` may create its temporary table: the role has TEMPORARY on the database (PostgreSQL).

    Asked before trying, because a refused `CREATE TEMPORARY TABLE` would abort the transaction.
    """
    engine = connection.engine
    allowed = _may_stage.get(engine)
    if allowed is None:
        privilege = "SELECT has_database_privilege(current_database(), 'TEMPORARY')"
        allowed = bool(connection.exec_driver_sql(privilege).scalar())
        if not allowed:
            log.debug(
                "the database role may not create temporary tables (no TEMPORARY privilege): "
                "writing rows with INSERT ... VALUES instead of COPY into a staging table"
            )
        _may_stage[engine] = allowed
    return allowed


def stage(
    connection: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """`COPY` rows into the temporary table `stage_table` names, creating it if need be (PostgreSQL).

    The table lives as long as the database session and is emptied at every commit (and before
    each use), so it is created once per pooled connection and the catalog does not churn.
    It belongs to the caller's transaction like every other statement.
    """
    from psycopg import sql

    staged = sql.Identifier(stage_table(table, columns).name)
    names = sql.SQL(", ").join(sql.Identifier(column) for column in columns)
    driver = connection.connection.driver_connection
    assert driver is not None
    processors = converters(table, columns, connection.dialect)
    with driver.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
            ).format(staged, names, sql.Identifier(table.name))
        )
        cursor.execute(sql.SQL("DELETE FROM {}").format(staged))  # rows staged earlier in this transaction
        with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staged, names)) as copy:
            for row in driver_rows(rows, columns, processors):
                copy.write_row(row)
