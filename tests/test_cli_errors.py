"""Errors a user can make or meet: one line naming what is wrong and what to do, a documented exit status."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from archiver import migrate
from archiver.cli import cli
from archiver.schema import SCHEMA_REVISION

from .support import fakes

NEWER = "0042"
TOO_NEW = (
    f"the archive is at schema revision {NEWER}, newer than this archiver (knows up to {SCHEMA_REVISION}): "
    "upgrade the archiver"
)


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    unset: dict[str, str | None] = {"ARCHIVER_DATABASE_URL": None, "BASETEN_API_URL": None}
    return CliRunner().invoke(cli, list(args), env=unset | {"BASETEN_API_KEY": "k"} | (env or {}))


def one_error_line(result: Result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def newer_archive(archive: Engine) -> Engine:
    """An archive a newer archiver migrated: stamped with a revision this one has no file for."""
    fakes.sync(archive, fakes.small_org())
    with archive.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = :newer"), {"newer": NEWER})
    return archive


@pytest.mark.parametrize(
    ("command", "exit_code"),
    [
        (("sync", "--api-url", "http://127.0.0.1:9", "--max-attempts", "1"), 1),
        (("sync", "--migrate", "--api-url", "http://127.0.0.1:9", "--max-attempts", "1"), 1),
        (("query", "SELECT 1"), 1),
        (("report", "storage"), 1),
        (("runs",), 1),
        (("db", "upgrade"), 1),
        (("db", "downgrade", "0005", "--yes"), 1),
        (("rebuild", "--database-url", "sqlite:///rebuilt.db"), 1),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else str(value),
)
def test_a_newer_schema_says_to_upgrade_the_archiver(
    newer_archive: Engine,
    database_url: str,
    command: tuple[str, ...],
    exit_code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It said "run `archiver db upgrade`", and that crashed in Alembic."""
    monkeypatch.chdir(tmp_path)
    result = invoke(*command, env={"ARCHIVER_DATABASE_URL": database_url})
    assert result.exit_code == exit_code
    assert one_error_line(result) == f"error: {TOO_NEW}"
    assert migrate.current_revision(newer_archive) == NEWER


def test_db_current_and_check_say_the_same(newer_archive: Engine, database_url: str) -> None:
    current = invoke("db", "current", "--database-url", database_url)
    assert current.exit_code == 0 and current.stdout == f"{NEWER} (head {SCHEMA_REVISION}): {TOO_NEW}\n"
    check = invoke("check", "--database-url", database_url)
    assert check.exit_code == 5 and f"ERROR   schema: {TOO_NEW}" in check.stdout


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://postgres@127.0.0.1:99999/test", "port 99999 is out of range (1 to 65535)"),
        ("postgresql://postgres@127.0.0.1:0/test", "port 0 is out of range"),
        ("postgresql://x:y@[::1", "the database URL could not be parsed"),
        ("postgresql://x:y@[::1]:abc/db", "the database URL could not be parsed"),
        ("sqlite:///", "sqlite:/// names no file"),
        ("sqlite:///:memory:", "names no file"),
        ("sqlite:///%00", "the database URL holds a NUL character"),
        ("mysql://x@127.0.0.1/db", "SQLite or PostgreSQL (psycopg 3), not mysql"),
        ("postgresql+asyncpg://x@127.0.0.1/db", "not postgresql+asyncpg"),
    ],
)
@pytest.mark.parametrize(
    "command", [("query", "SELECT 1"), ("sync",), ("db", "upgrade"), ("docs", "--datasette")]
)
def test_a_database_url_that_cannot_work_is_a_usage_error(
    url: str, says: str, command: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(*command, "--database-url", url)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert says in line and "e.g. sqlite:///archive.db" in line and "y@" not in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("api_url", "says"),
    [
        ("http://[::1", "it cannot be parsed"),
        ("http://", "it names no host"),
        ("ftp://127.0.0.1", "it must start with https:// or http://"),
        ("http://127.0.0.1:99999", "port 99999 is out of range"),
    ],
)
def test_an_api_url_that_cannot_work_is_a_usage_error(api_url: str, says: str, tmp_path: Path) -> None:
    result = invoke("sync", "--api-url", api_url, "--database-url", f"sqlite:///{tmp_path / 'a.db'}")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert line.startswith("error: the API URL is not usable: ") and says in line
    assert line.endswith("check --api-url / BASETEN_API_URL")


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "cannot read --api-key-file"), (b"\xff\xfe\x00key", "is not text"), (b"\n", "is empty")],
)
def test_a_key_file_that_holds_no_key_is_a_usage_error(
    content: bytes | None, says: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_bytes(content)
    result = invoke(
        "sync",
        "--api-key-file",
        str(key_file),
        "--database-url",
        f"sqlite:///{tmp_path / 'a.db'}",
        env={"BASETEN_API_KEY": None},
    )
    assert result.exit_code == 2 and says in one_error_line(result)


def test_arguments_that_are_not_utf8_are_a_usage_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 reach Python as surrogates: the database driver raised on them."""
    result = invoke(
        "report", "checkpoints", "--job", "\udcff", "--database-url", f"sqlite:///{tmp_path / 'a.db'}"
    )
    assert result.exit_code == 2 and one_error_line(result) == (
        "error: argument 4 is not UTF-8 text: give it again as UTF-8"
    )
    secret = invoke("sync", env={"BASETEN_API_KEY": "key-\udcfe"})
    assert secret.exit_code == 2 and one_error_line(secret) == (
        "error: BASETEN_API_KEY is not UTF-8 text: give it again as UTF-8"
    )


@pytest.mark.parametrize("option", ["--max-age", "--warn-age", "--max-run-time"])
def test_a_duration_too_long_to_count_is_a_usage_error(option: str, tmp_path: Path) -> None:
    result = invoke("check", option, "92730162586329", "--database-url", f"sqlite:///{tmp_path / 'a.db'}")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is longer than a calendar can count" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"), [(("--port", "99999"), "99999"), (("--host", "[::1"), "cannot listen on [::1")]
)
def test_fake_api_that_cannot_listen_says_why(args: tuple[str, ...], says: str) -> None:
    result = invoke("fake-api", *args)
    assert result.exit_code == 2 and "Traceback" not in result.output and says in result.stderr
