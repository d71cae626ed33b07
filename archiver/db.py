"""Engines, the dialect-aware bulk upsert, and the schema-version gate."""

from __future__ import annotations

import functools
import os
import pwd
import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import asbool

from archiver import bulk
from archiver.errors import DatabaseUnavailable, UsageError
from archiver.normalize import canonical_json
from archiver.schema import INTERNAL_SCHEMA

DEFAULT_DATABASE_URL = "sqlite:///archive.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_HEADER = b"SQLite format 3\x00"
# The archive holds user e-mails: a SQLite file a writer creates is its owner's alone (mode 0600),
# whatever the umask; SQLite gives the -wal and -shm files the database file's mode.
PRIVATE_UMASK = 0o077
# Rows per statement: well under SQLite's 32,766 bound variables with a dozen columns.
BATCH_ROWS = 1_000
# Fewer rows than this go to PostgreSQL as `INSERT ... VALUES` (psycopg pipelines them in one round
# trip) rather than through a staging table, whose set-up takes four: a project's listing of 50 jobs.
STAGE_MIN_ROWS = 200
# The drivers the archiver is written for: it calls pysqlite's and psycopg 3's own APIs.
DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
_URL_HELP = (
    "expected e.g. sqlite:///archive.db or postgresql://user@host/dbname "
    "(set --database-url or ARCHIVER_DATABASE_URL)"
)


def parse_url(url: str | sa.URL) -> sa.URL:
    """Parse a database URL, choosing psycopg 3 for plain `postgresql://` and `postgres://` URLs."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        raise UsageError(f"the database URL could not be parsed; {_URL_HELP}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    _refuse_unusable(parsed, str(url))
    return parsed


def _refuse_unusable(parsed: sa.URL, text: str) -> None:
    """Refuse, as a usage error, a URL that parses but names no database the archiver can use."""
    problem = None
    if parsed.drivername not in DRIVERS:
        problem = f"the archiver stores into SQLite or PostgreSQL (psycopg 3), not {parsed.drivername}"
    elif "\x00" in urllib.parse.unquote(text):
        problem = "the database URL holds a NUL character"
    elif parsed.port is not None and not 0 < parsed.port < 65536:
        problem = f"port {parsed.port} is out of range (1 to 65535)"
    elif parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        problem = f"{redact(parsed)} names no file (an archive in memory would vanish)"
    if problem is not None:
        raise UsageError(f"{problem}; {_URL_HELP}")


def redact(url: str | sa.URL) -> str:
    """Render a database URL with its password masked, for messages and logs."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return "<unparseable database URL>"
    # libpq also takes the password as a query parameter: postgresql://user@host/db?password=...
    hidden = {name: "***" for name in parsed.query if name.lower() == "password"}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def sqlite_path(url: sa.URL) -> Path | None:
    """The file a SQLite URL names, a plain path or a `file:` URI (with `uri=true`); None for memory."""
    database = url.database
    if not database or database == ":memory:":
        return None
    if not (asbool(url.query.get("uri", False)) and database.startswith("file:")):
        return Path(database)
    if url.query.get("mode") == "memory":
        return None
    path = database.removeprefix("file:")
    if path.startswith("//"):  # file://localhost/path or file:///path: the path starts after the host
        _host, slash, after = path[2:].partition("/")
        path = slash + after
    path = unquote(path)
    return Path(path) if path and path != ":memory:" else None


def make_engine(url: str | sa.URL, *, reading: bool = False) -> Engine:
    """Create an engine: SQLite in WAL mode with foreign keys and a busy timeout.

    A `reading` engine leaves a SQLite file as it is: it never switches the journal mode, which
    rewrites the file. (Queries refuse writes themselves: `query.read_only`.) A writing one creates
    a missing SQLite file private to its owner.
    """
    parsed = parse_url(url)
    try:
        engine = sa.create_engine(
            parsed,
            json_serializer=canonical_json,
            hide_parameters=True,  # rows never appear in exception text
            pool_pre_ping=parsed.get_backend_name() == "postgresql",
        )
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        hint = (
            " (install the PostgreSQL driver into the archiver's environment: "
            "pip install 'baseten-checkpoint-archiver[postgres]', or pip install 'psycopg[binary]>=3.1')"
            if "psycopg" in str(exc)
            else ""
        )
        raise UsageError(f"cannot use database {redact(parsed)}: {type(exc).__name__}{hint}") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, reading)
    else:
        _configure_postgresql(engine, reading)
    return engine


def open_existing(url: str | sa.URL) -> Engine:
    """Open an archive that must already exist, for reading: create no file and change none.

    A SQLite path that is missing, empty or not a SQLite database is an error, not a new archive.
    The file is opened read-write, though nothing writes to it: the last reader to close then
    removes the `-wal` and `-shm` files it needed, where a read-only open would leave them behind.
    On read-only media it is opened read-only (`read_only_fallback`).
    """
    engine = make_engine(read_only_fallback(require_existing(url)), reading=True)
    check_connection(engine)
    return engine


def read_only_fallback(url: sa.URL) -> sa.URL:
    """The URL to read a SQLite archive whose directory cannot be written (read-only media) with.

    Reading a WAL database needs its `-shm` index, which SQLite creates beside the file. Where it
    cannot, the file is opened `mode=ro`, and `immutable` when there is no `-shm` and no unmerged
    `-wal` (then SQLite reads the file alone, taking no locks: right for a file nothing writes).
    """
    path = sqlite_path(url) if url.get_backend_name() == "sqlite" else None
    if path is None:
        return url
    real = Path(os.path.realpath(path))  # SQLite keeps the -wal and -shm beside the real file
    if os.access(real.parent, os.W_OK):
        return url
    wal, shm = (real.with_name(real.name + suffix) for suffix in ("-wal", "-shm"))
    unmerged = wal.exists() and wal.stat().st_size > 0
    query = {"uri": "true", "mode": "ro"} | ({} if shm.exists() or unmerged else {"immutable": "1"})
    return url.set(database="file:" + quote(str(real))).update_query_dict(query)


def require_existing(url: str | sa.URL) -> sa.URL:
    """Parse a database URL; refuse a SQLite path that holds no database, before SQLite would create it."""
    parsed = parse_url(url)
    path = sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None:
        _require_sqlite_file(path)
    return parsed


def _require_sqlite_file(path: Path) -> None:
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        raise DatabaseUnavailable(
            f"there is no archive at {path}: run `archiver sync` (or `archiver demo`) to make one, "
            "or point --database-url / ARCHIVER_DATABASE_URL at an existing archive"
        ) from None
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot read {path}: {exc.strerror}") from None
    if header != SQLITE_HEADER:
        what = "an empty file" if not header else "not a SQLite database"
        raise DatabaseUnavailable(
            f"{path} is {what}, not an archive (left as it is): check --database-url / ARCHIVER_DATABASE_URL"
        )


def _configure_sqlite(engine: Engine, reading: bool) -> None:
    if not reading:

        @sa.event.listens_for(engine, "do_connect")
        def _create_private(
            dialect: sa.Dialect, _record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
        ) -> DBAPIConnection:
            # SQLite creates a missing file as it connects. The umask is the process's: a file another
            # thread creates meanwhile is private too, which does no harm.
            previous = os.umask(PRIVATE_UMASK)
            try:
                return dialect.connect(*cargs, **cparams)
            finally:
                os.umask(previous)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        assert isinstance(dbapi_connection, sqlite3.Connection)
        # Let SQLAlchemy's BEGIN (below) own transactions, so DDL is transactional too.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not reading:  # switching the journal mode rewrites the file
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def _configure_postgresql(engine: Engine, reading: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # The bookkeeping's schema (revision 0017) last on the search path: the archiver names its
        # tables alone, wherever they live; new tables are still made in the archive's own schema.
        cursor = dbapi_connection.cursor()
        cursor.execute(_FIND_INTERNAL)
        if not reading:
            cursor.execute(_NO_JIT)
        cursor.close()
        dbapi_connection.commit()


_FIND_INTERNAL = (
    "SELECT set_config('search_path', "
    f"concat_ws(', ', nullif(current_setting('search_path'), ''), '{INTERNAL_SCHEMA}'), false)"
)
# The archive's own writes and refreshes without JIT compilation (on by default since PostgreSQL 12).
# The planner compiles any statement it costs above `jit_above_cost`, as it does the facts views over
# every checkpoint: compiling took 0.3-1.2 s a statement, for statements that then ran in 0.05-0.3 s
# (`project_storage_daily_live` over 98,758 checkpoint versions: 1.4-1.7 s with JIT, 0.32 s without).
# Where the server has no such setting (before PostgreSQL 11) nothing is set. Readers keep the server's.
_NO_JIT = "SELECT set_config('jit', 'off', false) WHERE current_setting('jit', true) IS NOT NULL"


@contextmanager
def migration_transaction(connection: Connection, *, commit: bool = True) -> Iterator[None]:
    """Run a migration in one transaction; on SQLite with foreign keys checked at its end, not per statement.

    Alembic's batch mode rebuilds a SQLite table by copying it, dropping the original and renaming
    the copy: with foreign keys enforced, dropping a table that other rows refer to fails. The
    pragma only changes outside a transaction, so it is set around it. Without `commit`, the
    migration is tried and rolled back (both databases roll back DDL).
    """
    driver = connection.connection.driver_connection
    sqlite = isinstance(driver, sqlite3.Connection)
    if isinstance(driver, sqlite3.Connection):
        driver.execute("PRAGMA foreign_keys = OFF")
    try:
        with connection.begin() as transaction:
            yield
            if not commit:
                transaction.rollback()
            elif sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                raise sa.exc.IntegrityError(
                    "PRAGMA foreign_key_check", None, sqlite3.IntegrityError("FOREIGN KEY constraint failed")
                )
    finally:
        if isinstance(driver, sqlite3.Connection):
            driver.execute("PRAGMA foreign_keys = ON")


def check_connection(engine: Engine) -> None:
    """Fail fast, before any API traffic, when the database cannot be reached."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the database {redact(engine.url)}: {describe_db_error(exc)}; "
            f"check --database-url / ARCHIVER_DATABASE_URL and {_what_must_hold(engine.url)}"
        ) from None


def _what_must_hold(url: sa.URL) -> str:
    """What a database needs to be reachable: a SQLite file has a directory, not a server."""
    if url.get_backend_name() != "sqlite":
        return f"that the server {url.host or 'localhost'}:{url.port or 5432} is up and takes connections"
    path = sqlite_path(url)
    if path is None:
        return "that the SQLite file can be opened"
    return f"that the directory {path.parent} exists and that this user ({_user()}) may write in it"


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry, as in some containers
        return f"uid {os.getuid()}"


def database_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    """What a failing database raises: SQLAlchemy's wrapper, or the driver's own error where we call the
    driver directly (the PostgreSQL COPY path)."""
    driver_error = getattr(engine.dialect.dbapi, "Error", None)
    return (sa.exc.DBAPIError,) if driver_error is None else (sa.exc.DBAPIError, driver_error)


def describe_db_error(exc: BaseException) -> str:
    """Describe a database error in one line, without parameters or the URL's password."""
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [type(original).__name__])[0]
    return f"{type(original).__name__}: {first_line[:300]}"


def chunked(rows: Sequence[Any], size: int = BATCH_ROWS) -> Iterator[Sequence[Any]]:
    """Yield successive slices of at most `size` items."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def upsert(
    connection: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
    keep: Iterable[str] = ("first_seen_at",),
    only_if_changed: bool = False,
) -> None:
    """Insert rows, updating those whose key exists, with the dialect's native `INSERT ... ON CONFLICT`.

    Every column given in the rows (all rows name the same columns) is updated from `excluded`
    except the key and `keep` (first sightings survive). With `only_if_changed`, rows whose
    values are all equal are left untouched, so an unchanged night writes nothing.

    SQLite gets one executemany per batch, PostgreSQL one `COPY` into a temporary staging table
    and one `INSERT ... SELECT`; `bulk.py` says why both bypass per-row statement building. Fewer
    rows than STAGE_MIN_ROWS, or a PostgreSQL role that may not create temporary tables, get
    `INSERT ... VALUES` instead.
    """
    if not rows:
        return
    dialect = connection.dialect.name
    staged = dialect == "postgresql" and len(rows) >= STAGE_MIN_ROWS and bulk.can_stage(connection)
    statement = upsert_statement(
        dialect, table, tuple(rows[0]), tuple(key), tuple(keep), only_if_changed, staged
    )
    if staged:
        bulk.stage(connection, table, list(rows[0]), unique_rows(rows, key))
        connection.execute(statement)
    elif dialect == "postgresql":
        connection.execute(statement, unique_rows(rows, key))
    else:
        bulk.executemany(connection, statement, table, rows, BATCH_ROWS)


def insert(connection: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows (all naming the same columns): on SQLite many a statement, as `upsert` does."""
    if not rows:
        return
    if connection.dialect.name == "sqlite":
        bulk.executemany(connection, _insert_statement(table), table, rows, BATCH_ROWS)
    else:
        connection.execute(_insert_statement(table), list(rows))


@functools.lru_cache(maxsize=64)
def _insert_statement(table: sa.Table) -> sa.Insert:
    return sa.insert(table)


@functools.lru_cache(maxsize=256)
def upsert_statement(
    dialect: str,
    table: sa.Table,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    keep: tuple[str, ...],
    only_if_changed: bool,
    staged: bool = False,
) -> sa.Insert:
    """Build (once per shape) the upsert `upsert` runs: SELECT from the stage when `staged` (PostgreSQL), else VALUES."""
    statement: Any  # either dialect's Insert; a dialect's modules are loaded only where it is used
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        statement = postgresql_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table)
    if staged:
        stage = bulk.stage_table(table, columns)
        statement = statement.from_select(list(columns), sa.select(*stage.c))
    skip = set(key) | set(keep)
    updated = [name for name in columns if name not in skip]
    set_ = {name: statement.excluded[name] for name in updated}
    where = (
        sa.or_(*(table.c[name].is_distinct_from(statement.excluded[name]) for name in updated))
        if only_if_changed
        else None
    )
    built: sa.Insert = (
        statement.on_conflict_do_update(index_elements=list(key), set_=set_, where=where)
        if set_
        else statement.on_conflict_do_nothing(index_elements=list(key))
    )
    return built


def unique_rows(rows: Sequence[Mapping[str, Any]], key: Sequence[str]) -> list[Mapping[str, Any]]:
    """Keep the last row of each key: one `INSERT ... SELECT` may not update a row twice."""
    key_of = bulk.getter(key)
    return list({key_of(row): row for row in rows}.values())
