"""The sync lock cannot be lost unnoticed or bypassed, and the archive's files are private.

Each case runs real `archiver sync` processes against the fake API on loopback, holding the first
at its checkpoint requests (a `Gate`) while the test takes its lock away or starts another sync.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from archiver import db
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, OrgSpec, serve
from archiver.lock import ADVISORY_KEY

from .support.commands import Result, run_archiver, start_archiver, sync_env
from .support.databases import rows
from .support.gates import Gate
from .support.waiting import GENEROUS_S, wait_for

BUSY = "another `archiver sync` is running"


def org(seed: int) -> FakeBaseten:
    """A small organisation; different seeds have different ids."""
    return FakeBaseten(OrgSpec(seed=seed, projects=2, jobs_per_project=2, checkpoints_per_job=2))


@dataclass
class Held:
    """A real sync held at its first checkpoint request until `finish`."""

    process: subprocess.Popen[str]
    gate: Gate
    fake: FakeBaseten

    def finish(self) -> tuple[int, str]:
        """Let the sync go on to its end; return its exit status and stderr."""
        self.gate.open()
        _out, err = self.process.communicate(timeout=GENEROUS_S)
        return self.process.returncode, err


@contextmanager
def held_sync(database_url: str) -> Iterator[Held]:
    """Start `archiver sync` into `database_url` and yield once it waits for checkpoints."""
    fake = org(seed=31)
    gate = Gate(fake)
    with serve(fake) as url:
        process = start_archiver("sync", "--concurrency", "1", env=sync_env(url, database_url))
        try:
            wait_for(
                gate.reached.is_set,
                "the sync to ask for checkpoints",
                unless=lambda: process.poll() is not None,
            )
            yield Held(process, gate, fake)
        finally:
            gate.open()
            if process.returncode is None:
                process.communicate(timeout=GENEROUS_S)


def another_sync(database_url: str) -> Result:
    """A whole sync of another organisation into `database_url`."""
    with serve(org(seed=32)) as url:
        return run_archiver("sync", env=sync_env(url, database_url))


def run_row(database_url: str, run_id: int = 1) -> tuple[object, ...]:
    engine = db.open_existing(database_url)
    try:
        (row,) = rows(engine, "SELECT status, error_summary FROM sync_runs WHERE id = :id", id=run_id)
        return row
    finally:
        engine.dispose()


def error_kinds(database_url: str, run_id: int = 1) -> list[tuple[object, ...]]:
    engine = db.open_existing(database_url)
    try:
        return rows(engine, "SELECT kind FROM sync_errors WHERE sync_run_id = :id", id=run_id)
    finally:
        engine.dispose()


def stored_jobs(database_url: str) -> set[object]:
    """The jobs whose checkpoints the archive holds."""
    engine = db.open_existing(database_url)
    try:
        return {job for (job,) in rows(engine, "SELECT DISTINCT training_job_id FROM checkpoints")}
    finally:
        engine.dispose()


def terminate_lock_connection(database_url: str) -> None:
    """Do to the sync lock's connection what pg_terminate_backend, or a server restart, does."""
    engine = db.make_engine(database_url)
    try:
        killed = rows(
            engine,
            # Waited for (up to 10 s): the lock is free once the call returns.
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = :high AND objid = :low AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            high=ADVISORY_KEY >> 32,
            low=ADVISORY_KEY & 0xFFFFFFFF,
        )
    finally:
        engine.dispose()
    assert killed == [(True,)]


def test_a_sync_whose_lock_connection_is_killed_stops_before_its_next_write(postgres_url: str) -> None:
    """PostgreSQL: the run went on unlocked, and the next sync marked it failed while it was still working."""
    with held_sync(postgres_url) as held:
        terminate_lock_connection(postgres_url)
        second = another_sync(postgres_url)  # the lock is free now: this one runs
        assert second.exit_code == 0, second.stderr
        assert "never finished" not in second.stderr
        assert held.process.poll() is None and run_row(postgres_url) == ("running", None)

        code, err = held.finish()
    assert code == 1, err
    assert err.count("error: lost the sync lock on the database") == 1 and "Traceback" not in err
    status, summary = run_row(postgres_url)
    assert status == "failed" and str(summary).startswith("lost the sync lock")
    assert error_kinds(postgres_url) == [("lock",)]
    assert run_row(postgres_url, 2)[0] == "succeeded"
    # Nothing the first run fetched after it lost its lock was written.
    assert not stored_jobs(postgres_url) & set(held.fake.job_ids())


def test_idle_session_timeout_does_not_take_the_lock(postgres_url: str) -> None:
    """PostgreSQL: a server's idle_session_timeout closed the idle lock connection, letting a second sync in."""
    set_idle_session_timeout(postgres_url, milliseconds=300)
    with held_sync(postgres_url) as held:
        # A connection opened after the lock's went idle: once the server has closed it, it would
        # have closed the lock's too, were that not exempt.
        wait_until_an_idle_connection_is_closed(postgres_url)
        second = another_sync(postgres_url)
        assert second.exit_code == 75 and BUSY in second.stderr, second.stderr
        code, err = held.finish()
    assert code == 0, err
    assert run_row(postgres_url) == ("succeeded", None)


def set_idle_session_timeout(database_url: str, *, milliseconds: int) -> None:
    engine = db.make_engine(database_url)
    try:
        with engine.begin() as connection:
            name = connection.execute(sa.text("SELECT current_database()")).scalar_one()
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.exec_driver_sql(f"ALTER DATABASE {quoted} SET idle_session_timeout = {milliseconds}")
    finally:
        engine.dispose()


def wait_until_an_idle_connection_is_closed(database_url: str) -> None:
    idle, watcher = db.make_engine(database_url), db.make_engine(database_url)
    try:
        with idle.connect() as connection:
            pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            connection.commit()
            wait_for(
                lambda: not rows(watcher, "SELECT 1 FROM pg_stat_activity WHERE pid = :pid", pid=pid),
                "the server to close an idle connection",
            )
    except sa.exc.DBAPIError:
        pass  # closing the closed connection
    finally:
        idle.dispose()
        watcher.dispose()


def test_a_removed_lock_file_lets_no_second_sync_in(tmp_path: Path) -> None:
    """SQLite: with its lock file removed (a tmp cleaner, a tidy hand), a second sync ran and marked the first failed."""
    database_url = f"sqlite:///{tmp_path / 'archive.db'}"
    with held_sync(database_url) as held:
        (tmp_path / "archive.db.lock").unlink()
        second = another_sync(database_url)
        assert second.exit_code == 75 and BUSY in second.stderr, second.stderr
        assert run_row(database_url) == ("running", None)
        code, err = held.finish()
    assert code == 0, err
    assert run_row(database_url) == ("succeeded", None)


@pytest.mark.parametrize("name", ["symlink", "hard link", "file: URI"])
def test_a_second_sync_through_another_name_of_the_file_is_refused(tmp_path: Path, name: str) -> None:
    """SQLite: the same file through a symlink or a hard link ran two syncs at once; a file: URI crashed."""
    archive = tmp_path / "archive.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with held_sync(f"sqlite:///{archive}") as held:
        if name == "symlink":
            (elsewhere / "link.db").symlink_to(archive)
            other = f"sqlite:///{elsewhere / 'link.db'}"
        elif name == "hard link":
            os.link(archive, elsewhere / "same.db")
            other = f"sqlite:///{elsewhere / 'same.db'}"
        else:
            other = f"sqlite:///file:{archive}?mode=rw&uri=true"
        second = another_sync(other)
        assert second.exit_code == 75 and BUSY in second.stderr, second.output
        code, err = held.finish()
    assert code == 0, err
    engine = db.open_existing(f"sqlite:///{archive}")
    try:
        assert rows(engine, "SELECT id, status FROM sync_runs") == [(1, "succeeded")]
    finally:
        engine.dispose()


def count_query(database_url: str, *, prefix: tuple[str, ...] = ()) -> Result:
    return run_archiver(
        "query",
        "--format",
        "csv",
        "--database-url",
        database_url,
        "SELECT COUNT(*) AS checkpoints FROM checkpoints",
        prefix=prefix,
    )


def test_file_uri_urls_sync_and_read(tmp_path: Path) -> None:
    """`sqlite:///file:...?uri=true` URLs crashed the sync and were refused by reading commands."""
    archive = tmp_path / "archive.db"
    fake = org(seed=33)
    with serve(fake) as url:
        for mode in ("rwc", "rw"):  # create, then a sync of the existing file
            result = run_archiver("sync", env=sync_env(url, f"sqlite:///file:{archive}?mode={mode}&uri=true"))
            assert result.exit_code == 0, result.output
    read = count_query(f"sqlite:///file:{archive}?mode=ro&uri=true")
    assert read.exit_code == 0, read.output
    assert read.stdout.split() == ["checkpoints", str(fake.total_checkpoints())]


@contextmanager
def read_only(directory: Path) -> Iterator[tuple[str, ...]]:
    """Yield a command prefix under which `directory` cannot be written, as on read-only media.

    Permissions do not stop root: for root the directory is bind-mounted read-only in a mount
    namespace of the command's own (`unshare`); anyone else loses write permission on it.
    """
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield ()
        finally:
            directory.chmod(0o755)
        return
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: no way to make a directory read-only")
    yield (
        "unshare",
        "--mount",
        "--",
        "sh",
        "-c",
        'mount --bind -o ro "$0" "$0" && exec "$@"',
        str(directory),
    )


def test_an_archive_on_read_only_media_can_be_read(tmp_path: Path) -> None:
    """Reading a WAL archive needs its -shm beside it: on read-only media every reading command failed."""
    media = tmp_path / "media"
    media.mkdir()
    database_url = f"sqlite:///{media / 'archive.db'}"
    fake = org(seed=34)
    with serve(fake) as url:
        assert run_archiver("sync", env=sync_env(url, database_url)).exit_code == 0
    with read_only(media) as prefix:
        cannot_write = subprocess.run(
            [*prefix, "touch", str(media / "probe")], capture_output=True, check=False
        )
        assert cannot_write.returncode != 0
        read = count_query(database_url, prefix=prefix)
        assert read.exit_code == 0, read.output
        assert read.stdout.split() == ["checkpoints", str(fake.total_checkpoints())]
        for command in (["runs"], ["db", "current"], ["report", "storage"], ["check"]):
            result = run_archiver(*command, "--database-url", database_url, prefix=prefix)
            assert result.exit_code == 0, (command, result.output)
        copy = tmp_path / "copy.db"  # a backup off the media, onto a disk that can be written
        backed_up = run_archiver("db", "backup", str(copy), "--database-url", database_url, prefix=prefix)
        assert backed_up.exit_code == 0, backed_up.output
    assert count_query(f"sqlite:///{copy}").stdout.split() == ["checkpoints", str(fake.total_checkpoints())]
    assert sorted(path.name for path in media.iterdir()) == ["archive.db", "archive.db.lock"]


def test_the_archive_files_are_created_private(tmp_path: Path) -> None:
    """The archive holds user e-mails: its files were created world-readable."""
    previous = os.umask(0o022)  # the common umask, which leaves new files readable by everyone
    try:
        with held_sync(f"sqlite:///{tmp_path / 'archive.db'}") as held:
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
            code, err = held.finish()
    finally:
        os.umask(previous)
    assert code == 0, err
    private = dict.fromkeys(["archive.db", "archive.db-wal", "archive.db-shm", "archive.db.lock"], 0o600)
    assert modes == private


def test_a_key_file_others_can_read_gets_a_warning(tmp_path: Path) -> None:
    """A key file readable by everyone was accepted silently."""
    key_file = tmp_path / "baseten-api-key"
    key_file.write_text(DEFAULT_API_KEY + "\n")
    warnings: dict[int, list[str]] = {}
    with serve(org(seed=35)) as url:
        env = {"BASETEN_API_URL": url, "ARCHIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'archive.db'}"}
        for mode in (0o644, 0o640, 0o600, 0o400):
            key_file.chmod(mode)
            result = run_archiver("sync", "--api-key-file", str(key_file), env=env)
            assert result.exit_code == 0, result.output
            warnings[mode] = [line for line in result.stderr.splitlines() if "--api-key-file" in line]
    for mode in (0o644, 0o640):
        (line,) = warnings[mode]
        assert line.endswith(
            f" WARNING --api-key-file {key_file} is open to other users (mode {mode:04o}): "
            f"make it its owner's alone, chmod 600 {key_file}"
        )
    assert warnings[0o600] == warnings[0o400] == []
