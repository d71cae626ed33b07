"""One sync at a time per database, with a lock that dies with its holder.

PostgreSQL: a session advisory lock on a connection held for the run. SQLite: an exclusive
`flock` on a file beside the database. Either is released by the operating system or the server
when the process dies, however it dies, so a killed run never blocks the next night.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.errors import SyncInProgress

# An arbitrary 64-bit key that names "the archiver's sync" among advisory locks.
ADVISORY_KEY = 0x41524348_49564552 & 0x7FFFFFFF_FFFFFFFF

_BUSY = (
    "another `archiver sync` is running on this database; this run changed nothing. "
    "Wait for it to finish (see `archiver runs`)"
)


@contextmanager
def sync_lock(engine: Engine) -> Iterator[None]:
    """Hold the database's sync lock for the block, or raise SyncInProgress at once."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine):
            yield
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with _file_lock(Path(engine.url.database + ".lock")):
            yield
    else:
        yield


@contextmanager
def _advisory_lock(engine: Engine) -> Iterator[None]:
    with engine.connect() as connection:
        acquired = connection.execute(
            sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
        ).scalar()
        connection.commit()
        if not acquired:
            raise SyncInProgress(_BUSY)
        try:
            yield
        finally:
            # A connection the server cut has already lost its lock; failing here would hide
            # the error that ended the run behind one about the unlock.
            with suppress(sa.exc.DBAPIError):
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
                connection.commit()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncInProgress(_BUSY) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
