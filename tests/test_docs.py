"""The docs cannot rot: every SQL example runs, every command is documented, every column described."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import query
from archiver.cli import cli
from archiver.cli import sync as sync_command
from archiver.schema import metadata
from archiver.views import VIEWS

from .support.commands import run_archiver
from .support.orgs import archive_org

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCHEMA_DOC = ROOT / "docs" / "schema.md"


def sql_blocks(path: Path) -> list[str]:
    return re.findall(r"^```sql\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
    return found


def test_every_sql_example_runs_on_an_archived_org(archive: Engine) -> None:
    archive_org(archive)
    failures = []
    ran = 0
    for path in DOCS:
        for number, sql in enumerate(sql_blocks(path), 1):
            try:
                with query.results(archive, sql) as result:
                    rows = list(result.rows)
            except Exception as exc:
                failures.append(f"{path.name} SQL block {number}: {exc}")
                continue
            ran += 1
            # The schema guide's examples are built for an organisation like this one: each finds rows.
            if path == SCHEMA_DOC and not rows:
                failures.append(f"{path.name} SQL block {number} found no rows:\n{sql}")
    assert not failures, "\n".join(failures)
    assert ran >= 12


def test_every_command_is_in_the_readme_and_has_help() -> None:
    readme = (ROOT / "README.md").read_text()
    for path in commands(cli):
        assert f"archiver {' '.join(path)}" in readme, f"README does not mention `archiver {' '.join(path)}`"
        result = run_archiver(*path, "--help")
        assert result.exit_code == 0 and "Usage: archiver" in result.stdout, path


@pytest.mark.parametrize("table", [*metadata.tables.values(), *VIEWS], ids=lambda t: t.name)
def test_every_table_and_view_column_is_described(table: sa.Table) -> None:
    name = table.name
    sections = re.split(r"^### ", SCHEMA_DOC.read_text(), flags=re.M)
    section = next((s for s in sections if s.startswith(f"`{name}`\n")), None)
    assert section is not None, f"docs/schema.md has no section for {name}"
    described = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert described == list(table.columns.keys())


def test_the_quick_start_ends_with_a_query_that_works(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- quick-start-query -->", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    args = shlex.split(block)
    assert args[:2] == [".venv/bin/archiver", "query"]
    assert run_archiver("demo", cwd=tmp_path).exit_code == 0
    result = run_archiver(*args[1:], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2 + 5


def test_the_readme_states_the_defaults_sync_really_has() -> None:
    """The README's fault table said requests are paced under `--max-rps` default 50; it is 95."""
    readme = (ROOT / "README.md").read_text()
    defaults = {option: param.default for param in sync_command.params for option in param.opts}
    stated = re.findall(r"`(--[a-z-]+)`[^`|()]{0,30}\((?:default )?(\d+(?:\.\d+)?)[,;)]", readme)
    assert len(stated) >= 4
    for option, value in stated:
        default = defaults[option]
        assert isinstance(default, int | float), option
        assert float(value) == float(default), f"README says {option} defaults to {value}"
