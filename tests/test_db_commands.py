"""`archiver db`: a downgrade that deletes data asks for --yes first; `db backup` copies a SQLite archive."""

from __future__ import annotations

import re
import sqlite3
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, migrate
from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.schema import SCHEMA_REVISION

from .support import fakes
from .support.archive_dump import dump
from .support.commands import run_archiver
from .support.databases import scalar

SPEC = OrgSpec(seed=4, projects=2, jobs_per_project=2, checkpoints_per_job=3)


@pytest.fixture
def archived(archive: Engine) -> FakeBaseten:
    """An archive holding an organisation, two runs and their history."""
    fake = FakeBaseten(SPEC)
    assert fakes.sync(archive, fake).exit_code == 0
    fake.set_job(fake.job_ids()[0], current_status="TRAINING_JOB_FAILED")
    assert fakes.sync(archive, fake).exit_code == 0
    return fake


def downgrade(database_url: str, *args: str) -> tuple[int, str]:
    result = run_archiver("db", "downgrade", *args, "--database-url", database_url)
    return result.exit_code, result.output


def test_downgrade_to_base_says_what_it_would_delete_and_waits_for_yes(
    archived: FakeBaseten, archive: Engine, database_url: str
) -> None:
    """`archiver db downgrade base` deleted the whole archive with no prompt and exit 0."""
    before = dump(archive)
    code, output = downgrade(database_url, "base")
    assert code == 2, output
    assert len(output.strip().splitlines()) == 1 and output.startswith(
        "error: downgrading to base would delete"
    )
    assert f"table checkpoints ({archived.total_checkpoints()} rows)" in output
    assert "table sync_runs (2 rows)" in output and "table training_job_history (" in output
    if database_url.startswith("sqlite"):
        assert f"`archiver db backup PATH --database-url {database_url}`" in output
    else:
        assert "pg_dump --format=custom --file archive.dump 'postgresql://" in output
    assert f"`archiver db downgrade base --yes --database-url {database_url}`" in output
    assert migrate.current_revision(archive) == SCHEMA_REVISION and dump(archive) == before

    code, output = downgrade(database_url, "base", "--yes")
    assert code == 0, output
    assert migrate.current_revision(archive) is None
    assert set(sa.inspect(archive).get_table_names()) <= {"alembic_version"}


def test_downgrade_past_the_run_ledger_names_the_history_it_drops(
    archived: FakeBaseten, archive: Engine, database_url: str
) -> None:
    """`archiver db downgrade 0001` dropped all history without a word."""
    code, output = downgrade(database_url, "0001")
    assert code == 2
    lost = dict(re.findall(r"(?:table|column) (\S+) \((\d+) (?:rows|values)\)", output))
    assert lost["sync_runs"] == "2" and lost["training_job_history"] == "1"
    assert lost["checkpoints.valid_from"] == str(archived.total_checkpoints())
    assert "table checkpoints " not in output  # 0001 keeps the checkpoints themselves
    assert "_facts" not in output  # computed from the archive: dropping them loses nothing
    assert migrate.current_revision(archive) == SCHEMA_REVISION

    code, output = downgrade(database_url, "0001", "--yes")
    assert code == 0, output
    assert migrate.current_revision(archive) == "0001"
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints") == archived.total_checkpoints()


def test_a_downgrade_that_deletes_nothing_needs_no_yes(archive: Engine, database_url: str) -> None:
    code, output = downgrade(database_url, "0003")
    assert code == 0, output
    assert migrate.current_revision(archive) == "0003"


@pytest.mark.parametrize(
    "command",
    [
        ("db", "downgrade", "0099"),
        ("db", "downgrade", "banana", "--yes"),
        ("db", "upgrade", "0005x"),
        ("db", "upgrade", "@"),  # Alembic syntax that failed inside Alembic: an AssertionError
        ("db", "upgrade", ""),
        ("db", "upgrade", "head+5"),
        ("db", "downgrade", "0008@base", "--yes"),  # branch syntax: it went to base
    ],
    ids=" ".join,
)
def test_a_revision_that_does_not_exist_is_a_usage_error(
    archive: Engine, database_url: str, command: tuple[str, ...]
) -> None:
    result = run_archiver(*command, "--database-url", database_url)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith(
        f"error: there is no schema revision {command[2]!r}: give one of 0001, 0002"
    )
    assert len(result.stderr.splitlines()) == 1
    assert migrate.current_revision(archive) == SCHEMA_REVISION


def test_backup_copies_a_sqlite_archive_while_it_is_read_and_written(tmp_path: Path) -> None:
    path = str(tmp_path / "archive.db")
    database_url = f"sqlite:///{path}"
    archive = db.make_engine(database_url)
    archived = FakeBaseten(SPEC)
    assert fakes.sync(archive, archived).exit_code == 0
    before = dump(archive)
    reader, writer = sqlite3.connect(path), sqlite3.connect(path)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM checkpoints").fetchone() == (
            archived.total_checkpoints(),
        )
        writer.execute("BEGIN IMMEDIATE")  # a sync mid-transaction: what it has not committed is not copied
        writer.execute("UPDATE checkpoints SET size_bytes = 0")
        copy = tmp_path / "backup" / "archive-copy.db"
        copy.parent.mkdir()
        result = run_archiver("db", "backup", str(copy), "--database-url", database_url)
        assert result.exit_code == 0, result.output
        assert reader.execute("SELECT COUNT(*) FROM checkpoints").fetchone() == (
            archived.total_checkpoints(),
        )
    finally:
        writer.rollback()
        reader.rollback()
        writer.close()
        reader.close()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert [p.name for p in copy.parent.iterdir()] == ["archive-copy.db"]
    copied = sa.create_engine(f"sqlite:///{copy}")
    try:
        assert scalar(copied, "PRAGMA integrity_check") == "ok"
        assert dump(copied) == before
    finally:
        copied.dispose()

    again = run_archiver("db", "backup", str(copy), "--database-url", database_url)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert dump(archive) == before
    archive.dispose()


@pytest.mark.parametrize("own", ["-wal", "-shm", "-journal", ""])
def test_backup_onto_the_archives_own_files_is_a_one_line_error(tmp_path: Path, own: str) -> None:
    """A copy written over the archive's -wal (or the archive) would corrupt it: it was exit 70."""
    path = tmp_path / "archive.db"
    archive = db.make_engine(f"sqlite:///{path}")
    assert fakes.sync(archive, FakeBaseten(SPEC)).exit_code == 0
    before = dump(archive)
    result = run_archiver("db", "backup", f"{path}{own}", "--database-url", f"sqlite:///{path}")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert "one of its own files" in result.stderr and "Traceback" not in result.output
    assert dump(archive) == before and scalar(archive, "PRAGMA integrity_check") == "ok"
    archive.dispose()


def test_backup_of_postgresql_points_to_pg_dump(postgres_url: str, tmp_path: Path) -> None:
    url = sa.make_url(postgres_url).set(password="pw-9d2f-not-shown").render_as_string(hide_password=False)
    result = run_archiver("db", "backup", str(tmp_path / "copy.db"), "--database-url", url)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "pg_dump --format=custom" in result.stderr and "pw-9d2f-not-shown" not in result.stderr
    assert list(tmp_path.iterdir()) == []
