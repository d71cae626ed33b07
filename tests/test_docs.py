"""The docs cannot rot: every SQL example runs, every command is documented, every column described."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import signal
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, demo, docs, migrate, query
from archiver.cli import cli
from archiver.commands.sync import sync as sync_command
from archiver.descriptions import ABOUT
from archiver.fake_api import serve

from .support.commands import run_archiver, start_archiver, sync_env
from .support.databases import KINDS, databases
from .support.orgs import archive_org

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCHEMA_DOC = ROOT / "docs" / "schema.md"


# The commands that only read an archive: the README's examples of them run against the demo's.
READING = (("query",), ("report",), ("runs",), ("check",), ("db", "current"))


def sql_blocks(path: Path) -> list[str]:
    return re.findall(r"^```sql\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def readme_commands() -> list[list[str]]:
    """The arguments of every `archiver` command line in README.md's shell code blocks."""
    blocks = re.findall(r"^```(?:sh|cron)\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    found = []
    for line in (line for block in blocks for line in block.splitlines()):
        words = shlex.split(line, comments=True)
        for start, word in enumerate(words):
            # The command, not a user or directory of that name (`useradd ... archiver`, `sudo -u archiver`).
            at_command = start == 0 or words[start - 1] in ("&&", "||", "|", ";")
            if (word == "archiver" and at_command) or word.endswith("/bin/archiver"):
                args = list(
                    itertools.takewhile(lambda w: w not in ("&&", "||", "|", ">>", ">"), words[start + 1 :])
                )
                found.append(args)
    return found


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


@pytest.mark.parametrize("table", docs.OBJECTS, ids=lambda t: t.name)
def test_every_table_view_and_column_is_described_in_code(table: sa.Table) -> None:
    where = "in archiver/descriptions.py (ABOUT)"
    assert table.comment, f"describe {table.name} {where}"
    undescribed = [column.name for column in table.columns if not column.comment]
    assert not undescribed, f"describe {table.name}.{', '.join(undescribed)} {where}"


def test_no_description_outlives_its_column() -> None:
    objects = {table.name: table for table in docs.OBJECTS}
    assert set(ABOUT) <= set(objects)
    for name, about in ABOUT.items():
        assert set(about.columns) <= set(objects[name].columns.keys()), name


def test_the_schema_guide_is_generated_from_the_descriptions() -> None:
    committed = SCHEMA_DOC.read_text()
    assert docs.fill(committed) == committed, f"docs/schema.md is stale: run `{docs.REGENERATE}`"
    for table in docs.OBJECTS:
        assert docs.section(table) in committed, table.name


def test_a_table_the_schema_guide_leaves_out_is_named() -> None:
    without_tables = re.sub(r"<!-- describe: training_projects [^>]*-->", "", SCHEMA_DOC.read_text())
    with pytest.raises(ValueError, match="no section for training_projects, instance_types"):
        docs.fill(without_tables)


def test_archiver_docs_prints_every_section() -> None:
    result = run_archiver("docs")
    assert result.exit_code == 0, result.output
    assert result.stdout == "\n".join(docs.section(table) for table in docs.OBJECTS)


def test_datasette_metadata_describes_every_table_view_and_column_of_a_sqlite_archive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'team-archive.db'}"
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    inspector = sa.inspect(engine)
    relations = {*inspector.get_table_names(), *inspector.get_view_names()} - {"alembic_version"}
    result = run_archiver("docs", "--datasette", env={"ARCHIVER_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    # Datasette names the database after the file: `datasette team-archive.db -m metadata.json`.
    described = json.loads(result.stdout)["databases"]["team-archive"]["tables"]
    assert set(described) == relations
    for name, table in described.items():
        assert table["description"], name
        columns = [column["name"] for column in inspector.get_columns(name)]
        assert list(table["columns"]) == columns, name
        assert all(table["columns"].values()), name
    # Bookkeeping is hidden from Datasette's table list (what PostgreSQL keeps in archiver_internal);
    # what a reader charts is not, the job status history included.
    hidden = {name for name, table in described.items() if table.get("hidden")}
    assert hidden == {"api_responses", "api_response_bodies", "facts_inputs"} | {
        n
        for n in relations
        if n.endswith(("_history", "_live", "_versions")) and n != "training_job_status_history"
    }
    assert not hidden & {"checkpoint_facts", "job_facts", "gpu_hours_daily", "training_job_status_history"}
    engine.dispose()


def test_datasette_metadata_is_refused_for_postgresql() -> None:
    result = run_archiver("docs", "--datasette", "--database-url", "postgresql://reader@db.internal/archive")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: Datasette reads SQLite files: pass --database-url sqlite:///path/to/archive.db "
        "(the metadata names the database after the file)\n"
    )


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


@pytest.fixture(scope="module")
def demo_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where `archiver demo` has run, as after the README's first command."""
    directory = tmp_path_factory.mktemp("demo")
    result = run_archiver("demo", cwd=directory)
    assert result.exit_code == 0, result.output
    return directory


@pytest.mark.parametrize(
    "args",
    [
        list(args)
        for args in dict.fromkeys(map(tuple, readme_commands()))
        if any(args[: len(r)] == r for r in READING)
    ],
    ids=" ".join,
)
def test_every_readme_command_that_reads_finds_rows_in_the_demo_archive(
    args: list[str], demo_directory: Path
) -> None:
    """The README's examples (`report jobs --status FAILED --since 7d`, `report checkpoints --job
    p7qr9qv`, ...) printed nothing or failed on the demo archive, the one a new user has."""
    env = {"ARCHIVER_DATABASE_URL": "sqlite:///archiver-demo.db"}
    result = run_archiver(*args, env=env, cwd=demo_directory)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # A table: a header, a rule, then at least one row; `db current` says the revision.
    assert len(lines) >= (1 if args[0] == "db" else 3), result.stdout


def test_the_readme_shows_the_commands_that_read() -> None:
    found = {tuple(args[:2]) for args in readme_commands()}
    assert {("report", "jobs"), ("report", "checkpoints"), ("report", "storage"), ("db", "current")} <= found
    assert sum(args[0] == "query" for args in readme_commands()) >= 2


# README commands a test cannot run, by their first words, each with why.
NOT_RUN = {
    (
        "db",
        "backup",
        "/srv/backups/archive-2026-06-02.db",
    ): "writes under /srv/backups, which a test cannot create",
    ("sync", "--quiet", "--api-key-file", "/srv/archiver/baseten-api-key"): "cron: the production key file",
    ("sync", "--api-key-file", "/srv/archiver/baseten-api-key"): "cron: the production key file",
}
# README commands whose exit status is not 0, as the README says, by first words and database.
NOT_ZERO = {
    (("db", "grant-read"), "sqlite"): 2,  # "PostgreSQL: a BI role reads ..."
    (("db", "downgrade", "0002"), "sqlite"): 2,  # "--yes when that deletes data", as it would here
    (("db", "downgrade", "0002"), "postgresql"): 2,
    (("docs", "--datasette"), "postgresql"): 2,  # "for Datasette", which reads SQLite files
    (("fake-api",), "none"): 130,  # serves until Ctrl-C or SIGTERM stops it, as every command stops: 130
}
# README commands that touch no database the setting names (`demo` writes archiver-demo.db, always).
NO_DATABASE = (
    ("--version",),
    ("demo",),
    ("fake-api",),
    ("query", "--database-url", "sqlite:///archiver-demo.db"),
)
READER_ROLE = "archiver_reader"  # the role the README's grant-read names; created as docs/schema.md says


def _starts(args: tuple[str, ...], prefixes: Iterable[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The first of `prefixes` that `args` starts with, if any."""
    return next((prefix for prefix in prefixes if args[: len(prefix)] == prefix), None)


def _runnable() -> list[tuple[tuple[str, ...], str]]:
    """Every README command a test can run, with each database it touches ("none" for none)."""
    found = []
    for args in dict.fromkeys(map(tuple, readme_commands())):
        if _starts(args, NOT_RUN) is None:
            kinds = ("none",) if _starts(args, NO_DATABASE) else KINDS
            found += [(args, kind) for kind in kinds]
    return found


@pytest.fixture(scope="module")
def readme_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """What the README's commands expect around them: the demo's archive in the working directory, the
    fake API serving the organisation they name, and an archive of it (SQLite or PostgreSQL) that has
    synced it, named by the environment as the README's setup does."""
    kind = str(request.param)
    if kind == "none":
        yield {}
        return
    with ExitStack() as stack:
        make = stack.enter_context(databases(kind, tmp_path_factory.mktemp(f"readme-{kind}")))
        database_url = make()
        api_url = stack.enter_context(serve(demo.organisation()))
        env = sync_env(api_url, database_url)
        assert run_archiver("sync", env=env).exit_code == 0
        if kind == "postgresql":
            stack.enter_context(_reader_role(database_url))
        yield env


@contextmanager
def _reader_role(database_url: str) -> Iterator[None]:
    """The README's reader role on the test server, made if missing and dropped after if made here.

    Roles are server-wide: the cases that use it take turns (an advisory lock), or one would drop it
    while another grants to it. Advisory locks are per database, and each case has its own: the lock
    is taken in the server's `postgres` database, which they all share.
    """
    admin = db.make_engine(database_url)
    shared = db.make_engine(db.parse_url(database_url).set(database="postgres").render_as_string(False))
    with shared.connect() as lock:
        lock.exec_driver_sql(f"SELECT pg_advisory_lock({_READER_LOCK})")
        lock.commit()
        try:
            with admin.begin() as connection:
                exists = connection.scalar(
                    sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": READER_ROLE}
                )
                if not exists:
                    connection.exec_driver_sql(f"CREATE ROLE {READER_ROLE} NOLOGIN")
            try:
                yield
            finally:
                if not exists:
                    with admin.begin() as connection:
                        connection.exec_driver_sql(f"DROP OWNED BY {READER_ROLE}")
                        connection.exec_driver_sql(f"DROP ROLE {READER_ROLE}")
        finally:
            lock.exec_driver_sql(f"SELECT pg_advisory_unlock({_READER_LOCK})")
            lock.commit()
    admin.dispose()
    shared.dispose()


_READER_LOCK = 74_221_022  # any number no other test locks


@pytest.mark.parametrize(
    ("args", "readme_world"),
    _runnable(),
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
    indirect=["readme_world"],
)
def test_every_readme_command_runs_verbatim(
    args: tuple[str, ...],
    readme_world: dict[str, str],
    request: pytest.FixtureRequest,
    demo_directory: Path,
    tmp_path: Path,
) -> None:
    """The README's commands ran only where a test had copied them: `db downgrade -1` needed `--`,
    and nothing said so. Each runs here as written, against the fake API and a scratch archive."""
    kind = request.node.callspec.params["readme_world"]
    shutil.copy(demo_directory / "archiver-demo.db", tmp_path / "archiver-demo.db")
    expected = next((status for (p, k), status in NOT_ZERO.items() if k == kind and args[: len(p)] == p), 0)
    if args[0] == "fake-api":  # serves until stopped: it says where, then SIGTERM stops it
        process = start_archiver(*args)
        assert process.stderr is not None
        assert "Fake Baseten API on http://" in process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == expected
        return
    result = run_archiver(*args, env=readme_world, cwd=tmp_path)
    assert result.exit_code == expected, result.output


def test_the_readme_commands_a_test_cannot_run_are_few_and_named() -> None:
    commands = [tuple(args) for args in readme_commands()]
    for prefix in NOT_RUN:
        assert any(args[: len(prefix)] == prefix for args in commands), (
            f"NOT_RUN names a command gone: {prefix}"
        )
    assert len({args for args in commands if _starts(args, NOT_RUN)}) <= 4
    assert len(_runnable()) >= 35


def test_the_contributor_guide_names_places_that_exist() -> None:
    """Where a new column, endpoint, view, report or migration goes: each file and test it names is there."""
    readme = (ROOT / "README.md").read_text()
    guide = readme.split("## Changing the archiver\n", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`((?:archiver|migrations|tests)/[\w/.]+)`", guide)
    paths = {path for path in named if "YYYY" not in path}  # the one pattern, for a new revision's name
    tests = set(re.findall(r"`(test_\w+)`", guide))
    assert len(paths) >= 10 and len(tests) >= 4, "the guide names its places in backticks"
    assert [path for path in sorted(paths) if not (ROOT / path).exists()] == []
    defined = {
        name
        for source in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", source.read_text(), flags=re.M)
    }
    assert sorted(tests - defined) == []
    names = set(re.findall(r"`(\w+)\(\)`|`(BasetenClient|ApiResponse|Key|SCHEMA_REVISION)`", guide))
    code = "".join(path.read_text() for path in (ROOT / "archiver").rglob("*.py"))
    assert [
        n for pair in names for n in pair if n and not re.search(rf"\b(def|class) {n}\b|^{n} =", code, re.M)
    ] == []
