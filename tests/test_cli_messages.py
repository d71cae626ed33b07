"""What the command line says: commands it suggests work as copied, and its help is whole."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from archiver import migrate
from archiver.cli import cli
from archiver.schema import SCHEMA_REVISION

from .support.commands import run_archiver

SUGGESTED = re.compile(r"`(archiver [^`]*)`")


def suggestions(text: str) -> list[list[str]]:
    return [shlex.split(command) for command in SUGGESTED.findall(text)]


def test_a_suggested_upgrade_names_the_database_it_was_given_and_works_as_copied(
    database_url: str, engine: Engine
) -> None:
    """The out-of-date message said `archiver db upgrade`: copied, it migrated the default archive."""
    migrate.upgrade(engine, "0001")
    refused = run_archiver("query", "--database-url", database_url, "SELECT 1")
    assert refused.exit_code == 1
    upgrade = next(s for s in suggestions(refused.stderr) if s[:3] == ["archiver", "db", "upgrade"])
    assert upgrade[3:] == ["--database-url", database_url]
    assert run_archiver(*upgrade[1:]).exit_code == 0
    assert migrate.current_revision(engine) == SCHEMA_REVISION

    migrate.downgrade(engine, "0001")
    current = run_archiver("db", "current", "--database-url", database_url)
    assert current.exit_code == 0
    assert ["archiver", "db", "upgrade", "--database-url", database_url] in suggestions(current.stdout)


def test_a_url_from_the_environment_is_not_repeated(database_url: str, engine: Engine) -> None:
    migrate.upgrade(engine, "0001")
    refused = run_archiver("query", "SELECT 1", env={"ARCHIVER_DATABASE_URL": database_url})
    assert ["archiver", "db", "upgrade"] in suggestions(refused.stderr)


def test_a_suggested_command_masks_the_password(postgres_url: str) -> None:
    secret = "pw-0b7d-never-print"
    url = sa.make_url(postgres_url).set(password=secret).render_as_string(hide_password=False)
    result = run_archiver("runs", "--database-url", url)
    assert result.exit_code == 1 and secret not in result.output
    masked = sa.make_url(url).render_as_string(hide_password=True)
    assert ["archiver", "sync", "--database-url", masked] in suggestions(result.stderr)


def test_only_commands_that_take_the_archive_get_its_url() -> None:
    result = run_archiver("report", "storage", "--database-url", "sqlite:////nonexistent/typo.db")
    assert result.exit_code == 1
    found = suggestions(result.stderr)
    assert ["archiver", "sync", "--database-url", "sqlite:////nonexistent/typo.db"] in found
    # demo's --database-url is where the demo writes: the archive's URL must never go there.
    assert ["archiver", "demo"] in found


def every_command(
    group: click.Group = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))


@pytest.mark.parametrize("group", [(), ("db",), ("report",)], ids=lambda g: " ".join(("archiver", *g)))
def test_no_command_summary_is_cut_off(group: tuple[str, ...]) -> None:
    """Click cuts a first line that does not fit to "...": `downgrade  Downgrade the schema to REVISION ('base' removes every...`."""
    result = CliRunner().invoke(cli, [*group, "--help"], terminal_width=80)
    assert result.exit_code == 0
    listed = result.output.split("Commands:\n", 1)[1].splitlines()
    assert listed and not [line for line in listed if line.rstrip().endswith("...")]


def test_only_commands_that_log_take_logging_options() -> None:
    logging = {path for path, command in every_command() if any(p.name == "verbose" for p in command.params)}
    assert logging == {("sync",), ("demo",), ("fake-api",), ("rebuild",)}
    assert {
        path for path, command in every_command() if any(p.name == "log_format" for p in command.params)
    } == logging


def test_every_option_says_what_it_is_for() -> None:
    silent = [
        f"archiver {' '.join(path)} {param.opts[0]}"
        for path, command in every_command()
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert silent == []


def test_a_key_given_two_ways_is_a_usage_error(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("key-from-the-file\n")
    both = run_archiver("sync", "--api-key", "key-on-the-line", "--api-key-file", str(key_file), cwd=tmp_path)
    assert both.exit_code == 2 and "--api-key and --api-key-file both give a key" in both.stderr
    env = run_archiver(
        "sync", "--api-key-file", str(key_file), env={"BASETEN_API_KEY": "key-in-the-env"}, cwd=tmp_path
    )
    assert env.exit_code == 2 and "BASETEN_API_KEY and --api-key-file both give a key" in env.stderr
    assert "key-on-the-line" not in both.output and "key-in-the-env" not in env.output
    assert [path.name for path in tmp_path.iterdir()] == ["key"]


def test_sync_documents_its_exit_statuses_where_people_look() -> None:
    help_text = " ".join(CliRunner().invoke(cli, ["sync", "--help"], terminal_width=200).output.split())
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for status in (0, 1, 2, 3, 75, 130):
        assert re.search(rf"\b{status} ", help_text), status
        assert f"| {status} |" in readme, status
    assert "75 another sync is running" in help_text


@pytest.mark.parametrize(
    "path", [(), *(path for path, _ in every_command())], ids=lambda p: " ".join(("archiver", *p))
)
def test_every_help_lists_its_exit_statuses(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    help_text = " ".join(result.output.split())
    assert re.search(r"Exit status( \([a-z ]+\))?: (0 |each )", help_text), help_text
    assert re.search(r"\b2 usage error", help_text), help_text
