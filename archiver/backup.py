"""Copies of the archive to take before a destructive step: `archiver db backup PATH` for SQLite,
pg_dump for PostgreSQL (whose own tool does it better than the archiver could)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlencode

import sqlalchemy as sa

from archiver import db
from archiver.errors import DatabaseUnavailable, UsageError

# The files SQLite keeps beside a database: writing a copy there would corrupt the archive.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def backup_sqlite(database_url: str, target: Path) -> int:
    """Copy a SQLite archive to `target`, a new file only its owner can read; return its size in bytes.

    `VACUUM INTO` copies one consistent snapshot (a read transaction) while readers and even a
    sync go on, and writes a compact, self-contained file: no -wal beside it to forget.
    """
    url = db.require_existing(database_url)
    if url.get_backend_name() != "sqlite":
        raise UsageError(
            f"archiver db backup copies SQLite archives; for PostgreSQL use pg_dump: {pg_dump(url)}"
        )
    database = db.sqlite_path(url)
    if database is None:
        raise UsageError("archiver db backup copies a SQLite archive file, not an in-memory database")
    own = {database.resolve(), *(Path(f"{database.resolve()}{suffix}") for suffix in SQLITE_COMPANIONS)}
    if target.resolve() in own:
        raise UsageError(
            f"{target} is the archive itself or one of its own files (-wal, -shm, -journal): "
            "back it up to a path of its own, e.g. archive-2026-06-02.db"
        )
    try:
        # Created here, empty and private, so the copy never exists with wider permissions.
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise UsageError(f"{target} already exists: a backup never overwrites; choose a new path") from None
    except OSError as exc:
        raise UsageError(f"cannot create {target}: {exc.strerror}") from None
    source = _connect(url, database)
    try:
        source.execute(f"PRAGMA busy_timeout = {db.SQLITE_BUSY_TIMEOUT_MS}")
        source.execute("VACUUM INTO ?", (str(target),))
    except sqlite3.Error as exc:
        with suppress(FileNotFoundError):
            target.unlink()
        raise DatabaseUnavailable(f"backing up {database} failed: {exc}") from None
    finally:
        source.close()
    return target.stat().st_size


def _connect(url: sa.URL, database: Path) -> sqlite3.Connection:
    """The archive's file, read-only (`mode=ro`) where its directory cannot be written: read-only media."""
    readable = db.read_only_fallback(url)
    if readable is url:
        return sqlite3.connect(database, isolation_level=None)
    return sqlite3.connect(f"{readable.database}?{urlencode(readable.query)}", uri=True, isolation_level=None)


def how_to_back_up(url: sa.URL) -> str:
    """What to run to back the archive up first, for the database it is on."""
    if url.get_backend_name() == "sqlite":
        return "back it up first with `archiver db backup PATH`"
    return f"back it up first: {pg_dump(url)}"


def pg_dump(url: sa.URL) -> str:
    """The pg_dump command line for a PostgreSQL archive (libpq's URL, the password masked)."""
    return f"pg_dump --format=custom --file archive.dump '{db.redact(url.set(drivername='postgresql'))}'"
