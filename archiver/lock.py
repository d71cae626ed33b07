"""One sync at a time per database, with a lock that dies with its holder and is never lost unnoticed.

PostgreSQL: a session advisory lock, taken exclusively and then held shared on a connection kept
for the run (`application_name` "archiver sync lock", `idle_session_timeout` off for it). Every
write transaction takes the same lock shared for itself and checks, just before it commits, that
the holding backend still holds it (`SyncLock.verify`): a run whose lock connection the server cut
(`pg_terminate_backend`, a restart) stops before its next write instead of writing unlocked, and
no second sync can take the lock while such a transaction is open. Each run also holds a lock on
its own run id, on a second connection ("archiver run lock"): a later run records a `running` row
as dead only when that lock is free (`live_runs`), so a run that lost its sync lock but is still
alive is left to record its own end.

SQLite: an exclusive `flock` on the database file itself (Linux), which is one lock for every
name of the file (symlinks, hard links, `file:` URIs), and on `<real path>.lock` beside it, which
holds the holder's pid for people and is the lock where `flock` and SQLite's own `fcntl` locks
would interfere (BSD, macOS). Holding them, no other run can be alive.

Either is released by the operating system or the server when the process dies, however it dies,
so a killed run never blocks the next night.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from archiver import db
from archiver.errors import DatabaseUnavailable, LockLost, SyncInProgress

# An arbitrary 64-bit key that names "the archiver's sync" among advisory locks.
ADVISORY_KEY = 0x41524348_49564552 & 0x7FFFFFFF_FFFFFFFF
# The first of the two 32-bit keys of a run's own lock ("ARCH"); the second is the run id.
RUN_LOCK_CLASS = 0x41524348
LOCK_APPLICATION = "archiver sync lock"
RUN_APPLICATION = "archiver run lock"
PRIVATE = 0o600

_BUSY = (
    "another `archiver sync` is running on this database; this run changed nothing. "
    "Wait for it to finish (see `archiver runs`)"
)
_LOST = (
    "lost the sync lock on the database: the server closed the connection that held it "
    "(pg_terminate_backend, a restart or a network cut), so another sync may run; this run stopped "
    "before writing unlocked. Everything committed before this point is intact: rerun to finish"
)
# The advisory lock as pg_locks shows it: a 64-bit key is split into classid and objid, objsubid 1.
_HELD_SHARED = (
    "SELECT pg_try_advisory_xact_lock_shared(:key) AND EXISTS ("
    "SELECT FROM pg_locks WHERE locktype = 'advisory' AND pid = :holder AND granted AND mode = 'ShareLock' "
    "AND classid = :high AND objid = :low AND objsubid = 1)"
)
_LIVE_RUNS = (
    "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :class AND objsubid = 2 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


class SyncLock:
    """The sync lock a run holds; this base holds nothing to check (an in-memory or a SQLite archive)."""

    def verify(self, connection: Connection) -> None:
        """Raise LockLost unless the lock is still held; call in each write transaction, before it commits."""

    def hold_run(self, run_id: int) -> None:
        """Hold the lock that tells later runs this run is alive."""

    def live_runs(self, connection: Connection) -> set[int]:
        """The runs other than this one whose process still holds its run lock."""
        return set()


class AdvisoryLock(SyncLock):
    """The PostgreSQL sync lock, held by the backend `holder_pid`; run locks held on `runs`."""

    def __init__(self, holder_pid: int, runs: Connection) -> None:
        self.holder_pid = holder_pid
        self.runs = runs

    def verify(self, connection: Connection) -> None:
        held = connection.execute(
            sa.text(_HELD_SHARED),
            {
                "key": ADVISORY_KEY,
                "holder": self.holder_pid,
                "high": ADVISORY_KEY >> 32,
                "low": ADVISORY_KEY & 0xFFFFFFFF,
            },
        ).scalar()
        if not held:
            raise LockLost(_LOST)

    def hold_run(self, run_id: int) -> None:
        self.runs.execute(
            sa.text("SELECT pg_advisory_lock(:class, CAST(:run AS integer))"),
            {"class": RUN_LOCK_CLASS, "run": run_id},
        )
        self.runs.commit()

    def live_runs(self, connection: Connection) -> set[int]:
        return set(connection.execute(sa.text(_LIVE_RUNS), {"class": RUN_LOCK_CLASS}).scalars())


@contextmanager
def sync_lock(engine: Engine) -> Iterator[SyncLock]:
    """Hold the database's sync lock for the block, or raise SyncInProgress at once."""
    path = db.sqlite_path(engine.url) if engine.dialect.name == "sqlite" else None
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine) as lock:
            yield lock
    elif path is not None:
        with _file_locks(path):
            yield SyncLock()
    else:
        yield SyncLock()


@contextmanager
def _advisory_lock(engine: Engine) -> Iterator[AdvisoryLock]:
    with engine.connect() as holder, engine.connect() as runs:
        _dedicate(runs, RUN_APPLICATION)
        _dedicate(holder, LOCK_APPLICATION)
        key = {"key": ADVISORY_KEY}
        if not holder.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
            holder.commit()
            raise SyncInProgress(_BUSY)
        # Held shared from now on, so each write transaction can take it shared too (`verify`).
        holder.execute(sa.text("SELECT pg_advisory_lock_shared(:key)"), key)
        holder.execute(sa.text("SELECT pg_advisory_unlock(:key)"), key)
        pid = int(holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        holder.commit()
        try:
            yield AdvisoryLock(pid, runs)
        finally:
            # A connection the server cut has already lost its lock; failing here would hide
            # the error that ended the run behind one about the unlock.
            with suppress(sa.exc.DBAPIError):
                holder.execute(sa.text("SELECT pg_advisory_unlock_shared(:key)"), key)
                holder.commit()
            # Not back to the pool named and exempt from idle_session_timeout: closing them ends
            # their sessions, and with them the run's own lock.
            holder.invalidate()
            runs.invalidate()


def _dedicate(connection: Connection, name: str) -> None:
    """Name a lock's connection for pg_stat_activity, and exempt it from idle_session_timeout: it idles by design."""
    connection.execute(sa.text("SELECT set_config('application_name', :name, false)"), {"name": name})
    if connection.dialect.server_version_info and connection.dialect.server_version_info >= (14,):
        connection.execute(sa.text("SET idle_session_timeout = 0"))
    connection.commit()


@contextmanager
def _file_locks(database: Path) -> Iterator[None]:
    real = Path(os.path.realpath(database))
    with _pid_file_lock(real.with_name(real.name + ".lock")):
        if sys.platform.startswith("linux"):  # elsewhere flock and SQLite's fcntl locks collide
            with _database_file_lock(real):
                yield
        else:
            yield


@contextmanager
def _pid_file_lock(path: Path) -> Iterator[None]:
    descriptor = _open(path, os.O_RDWR)
    try:
        _flock(descriptor)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


# Descriptors of database files this process has locked, open until it exits: closing any descriptor
# of a file drops every fcntl lock the process holds on it, SQLite's own included. flock does not
# exclude a second holder of the same descriptor, so the files locked here are counted too.
_database_files: dict[tuple[int, int], int] = {}
_locked_here: set[tuple[int, int]] = set()
_registry = threading.Lock()


@contextmanager
def _database_file_lock(path: Path) -> Iterator[None]:
    with _registry:
        descriptor, inode = _database_file(path)
        if inode in _locked_here:
            raise SyncInProgress(_BUSY)
        _flock(descriptor)
        _locked_here.add(inode)
    try:
        yield
    finally:
        with _registry:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            _locked_here.discard(inode)


def _database_file(path: Path) -> tuple[int, tuple[int, int]]:
    """A descriptor of the database file, opened once per process, and the file's (device, inode)."""
    with suppress(FileNotFoundError):
        found = os.stat(path)
        if (inode := (found.st_dev, found.st_ino)) in _database_files:
            return _database_files[inode], inode
    descriptor = _open(path, os.O_RDONLY)
    opened = os.fstat(descriptor)
    inode = (opened.st_dev, opened.st_ino)
    return _database_files.setdefault(inode, descriptor), inode


def _open(path: Path, access: int) -> int:
    try:
        return os.open(path, access | os.O_CREAT, PRIVATE)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot open {path} to lock the archive: {exc.strerror}") from None


# `archiver check` tries the lock for an instant (`live_runs`): a sync starting just then tries again.
_TRIES, _PAUSE_S = 5, 0.05


def _flock(descriptor: int) -> None:
    for attempt in range(_TRIES):
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == _TRIES - 1:
                raise SyncInProgress(_BUSY) from None
            time.sleep(_PAUSE_S)


def live_runs(engine: Engine, connection: Connection, running: Collection[int]) -> set[int]:
    """Of the runs recorded `running`, those whose process is alive, seen from outside any sync (for `check`).

    PostgreSQL: those whose run lock is held. SQLite: none when the sync lock is free (tried shared, for
    an instant, without creating or writing anything), else the newest, the only one that can hold it.
    """
    if engine.dialect.name == "postgresql":
        return set(connection.execute(sa.text(_LIVE_RUNS), {"class": RUN_LOCK_CLASS}).scalars()) & set(
            running
        )
    path = db.sqlite_path(engine.url)
    if path is None or not running:  # an in-memory archive: no other process can have written it
        return set(running)
    return {max(running)} if _sync_holds(path) else set()


def _sync_holds(database: Path) -> bool:
    """Whether a sync holds a SQLite archive's lock; when that cannot be told, as if it did."""
    real = Path(os.path.realpath(database))
    try:
        descriptor = os.open(real.with_name(real.name + ".lock"), os.O_RDONLY)
    except FileNotFoundError:  # no sync has ever run on it
        return False
    except OSError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held
        return True
    finally:
        os.close(descriptor)  # closing releases the shared lock at once
    return False
