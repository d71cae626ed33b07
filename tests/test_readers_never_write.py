"""Commands that read the archive create no file and change none: a typo is an error, not a new archive."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db

from .support import fakes
from .support.commands import run_archiver

READERS = [
    ("db", "current"),
    ("query", "SELECT COUNT(*) FROM checkpoints"),
    ("query", "--as-of", "2026-01-01T00:00:00Z", "SELECT COUNT(*) FROM checkpoints"),
    ("report", "storage"),
    ("report", "jobs"),
    ("runs",),
    ("check",),
]


def refused(args: tuple[str, ...]) -> int:
    """The exit status that says "no archive here": `check` reports it as a failed check (5)."""
    return 5 if args == ("check",) else 1


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file in the directory with its size and modification time."""
    return {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in directory.iterdir()}


def run(args: tuple[str, ...], url: str) -> tuple[int, str]:
    result = run_archiver(*args, "--database-url", url)
    return result.exit_code, result.output


@pytest.fixture
def sqlite_archive(tmp_path: Path) -> Path:
    """A SQLite archive of a small organisation, closed, alone in its directory."""
    path = tmp_path / "archive" / "archive.db"
    path.parent.mkdir()
    engine = db.make_engine(f"sqlite:///{path}")
    assert fakes.sync(engine, fakes.small_org(2)).exit_code == 0
    engine.dispose()
    for lock in path.parent.glob("*.lock"):  # the sync's lock file: not what this test is about
        lock.unlink()
    return path


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_missing_sqlite_path_is_an_error_and_stays_missing(args: tuple[str, ...], tmp_path: Path) -> None:
    """`db current --database-url sqlite:///typo.db` created typo.db."""
    code, output = run(args, f"sqlite:///{tmp_path / 'typo.db'}")
    assert code == refused(args), output
    assert "there is no archive at" in output and "typo.db" in output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_an_empty_file_is_not_an_archive_and_is_left_as_it_was(args: tuple[str, ...], tmp_path: Path) -> None:
    """`query` on a zero-byte file turned it into a WAL database."""
    empty = tmp_path / "empty.db"
    empty.touch()
    before = snapshot(tmp_path)
    code, output = run(args, f"sqlite:///{empty}")
    assert code == refused(args), output
    assert "is an empty file, not an archive" in output
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_reading_an_archive_changes_no_file(args: tuple[str, ...], sqlite_archive: Path) -> None:
    before = snapshot(sqlite_archive.parent)
    code, output = run(args, f"sqlite:///{sqlite_archive}")
    assert code == 0, output
    assert snapshot(sqlite_archive.parent) == before


def test_check_reads_an_archive_a_sync_is_writing_without_getting_in_its_way(sqlite_archive: Path) -> None:
    """A reader beside a live writer: the -wal and -shm files are the writer's, and stay."""
    writer = sqlite3.connect(sqlite_archive)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a sync's transaction does
    try:
        code, output = run(("check",), f"sqlite:///{sqlite_archive}")
        assert code == 0, output
    finally:
        writer.rollback()
        writer.close()


def test_reading_keeps_a_rollback_journal_archive_in_its_journal_mode(sqlite_archive: Path) -> None:
    """Every connection said `PRAGMA journal_mode = WAL`, which rewrites the file's header."""
    with sqlite3.connect(sqlite_archive) as connection:
        connection.execute("PRAGMA journal_mode = DELETE")
    connection.close()
    before = snapshot(sqlite_archive.parent)
    for args in READERS:
        code, output = run(args, f"sqlite:///{sqlite_archive}")
        assert code == 0, output
    assert snapshot(sqlite_archive.parent) == before
    with sqlite3.connect(sqlite_archive) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    connection.close()


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n")
    os.utime(notes, ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(tmp_path)
    code, output = run(("db", "current"), f"sqlite:///{notes}")
    assert code == 1 and "not a SQLite database" in output, output
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_reading_a_database_without_an_archive_creates_no_schema(
    args: tuple[str, ...], database_url: str, engine: Engine
) -> None:
    with engine.begin() as connection:  # a SQLite file that exists, or an empty PostgreSQL database
        connection.exec_driver_sql("CREATE TABLE unrelated (id INTEGER)")
    code, output = run(args, database_url)
    assert code in (0, refused(args)), output
    if args == ("db", "current"):
        assert code == 0 and "base (empty)" in output
    else:
        assert "archiver sync" in output or "archiver db upgrade" in output
    assert sa.inspect(engine).get_table_names() == ["unrelated"]
