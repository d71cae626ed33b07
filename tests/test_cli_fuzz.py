"""No input to any command ends in a traceback: random commands, options, URLs and environments.

Every command in the Click tree is run with random arguments (garbage, huge and negative numbers,
bad durations, unparsable URLs, unicode) and a random environment. Each must end with one of the
documented exit statuses and print no traceback. The archive URLs are SQLite files in a scratch
directory or PostgreSQL on a closed loopback port; the API URLs are closed loopback ports or
malformed: nothing reaches a real server.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver import db
from archiver.cli import cli
from archiver.commands.shared import DATABASE_URL_ENVVAR

from .support import fakes
from .support.commands import run_archiver

# Every exit status the README documents (70, a bug, is deliberately missing).
DOCUMENTED = {0, 1, 2, 3, 4, 5, 75, 124, 130}
# fake-api serves until stopped; demo is covered below with bad options only (a good one runs it).
NOT_FUZZED = {("fake-api",), ("demo",)}
ENVIRONMENT = (DATABASE_URL_ENVVAR, "BASETEN_API_URL", "BASETEN_API_KEY")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CLOSED = closed_port()
DATABASE_URLS = [
    "sqlite:///archive.db",
    "sqlite:///good.db",
    "sqlite:///newer.db",
    "sqlite:///empty.db",
    "sqlite:///text.db",
    "sqlite:///missing/dir/x.db",
    "sqlite:///",
    "sqlite://",
    "sqlite:",
    "sqlite:///:memory:",
    "sqlite:///%00",
    "sqlite:///file:good.db?mode=ro&uri=true",
    f"postgresql://postgres@127.0.0.1:{CLOSED}/test",
    "postgresql://postgres@127.0.0.1:99999/test",
    "postgresql://postgres@127.0.0.1:0/test",
    "postgresql://postgres@127.0.0.1:-1/test",
    "postgresql://x:y@[::1",
    "postgresql://x:y@[::1]:abc/db",
    "postgresql+asyncpg://x@127.0.0.1/db",
    "mysql://x@127.0.0.1/db",
    "nonsense",
    "",
    "://",
    "sqlite:////",
]
API_URLS = [
    f"http://127.0.0.1:{CLOSED}",
    f"https://127.0.0.1:{CLOSED}/v1",
    f"http://[::1]:{CLOSED}",
    "http://[::1",
    "http://",
    "http:///path",
    "ftp://127.0.0.1",
    "http://127.0.0.1:99999",
    "http://127.0.0.1:-1",
    "127.0.0.1",
    "",
    "http://\udcff",
]
GARBAGE = [
    "",
    " ",
    "-1",
    "0",
    "-0",
    "1e400",
    "nan",
    "inf",
    "-inf",
    str(2**64),
    str(-(2**63) - 1),
    "9" * 40,
    "99999999999w",
    "1h30",
    "30x",
    "none",
    "0.0000001s",
    "2026-13-45",
    "0001-01-01",
    "9999-12-31T23:59:59+14:00",
    "head",
    "base",
    "0005x",
    "banana",
    "@",
    "head+5",
    "0042",
    "-1",
    "SELECT 1",
    "SELECT pg_sleep(0)",
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 10) SELECT * FROM c",
    "DELETE FROM checkpoints",
    "SELECT 1; SELECT 2",
    "SELECT * FROM checkpoint_facts",
    "SELECT x'00'",
    "SELECT 1e400",
    "SELECT 9223372036854775807 + 1",
    "json",
    "csv",
    "é✓\u202e",
    "\x01\x7f",
    "--help",
    *DATABASE_URLS,
    *API_URLS,
]
values = st.one_of(
    st.sampled_from(GARBAGE),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


def leaf_commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        elif (*path, name) not in NOT_FUZZED:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def value_for(parameter: click.Parameter) -> st.SearchStrategy[str]:
    """A value that may pass (so the command runs) or not; URLs only from the lists above, paths kept
    inside the scratch directory."""
    names = " ".join(parameter.opts)
    if "database-url" in names or "--from" in names:
        return st.sampled_from(DATABASE_URLS)
    if "api-url" in names:
        return st.sampled_from(API_URLS)
    if isinstance(parameter.type, click.Path):
        return values.map(lambda text: text.lstrip("/~") or "x")
    # Mostly values of the right kind, so that commands get past their options and run.
    return st.integers(0, 4).flatmap(lambda pick: values if pick == 0 else plausible(parameter))


def plausible(parameter: click.Parameter) -> st.SearchStrategy[str]:
    """A value of the kind the parameter takes."""
    kind = parameter.type
    if isinstance(kind, click.Choice):
        return st.sampled_from([str(choice) for choice in kind.choices])
    if isinstance(kind, click.types._NumberRangeBase | click.types.IntParamType | click.types.FloatParamType):
        low = getattr(kind, "min", None) or 0
        return st.integers(min_value=int(low), max_value=int(low) + 5).map(str)
    if parameter.metavar in ("DURATION", "WHEN"):
        return st.sampled_from(
            ["1s", "30s", "5m", "0", "none", "2h", "7d", "2026-06-02", "2026-06-02T03:00:00Z"]
        )
    if parameter.name == "sql":
        return st.sampled_from([value for value in GARBAGE if value.startswith(("SELECT", "WITH", "DELETE"))])
    return st.sampled_from(GARBAGE)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(sorted(leaf_commands())))
    command = command_at(path)
    words: list[str] = []
    for parameter in command.params:
        wanted = parameter.required or draw(st.integers(0, 3)) == 0
        if parameter.name in ("help", "version") or not wanted:
            continue
        if isinstance(parameter, click.Argument):
            words.append(draw(value_for(parameter)))
        elif isinstance(parameter, click.Option):
            words.append(draw(st.sampled_from(parameter.opts)))
            if not parameter.is_flag and not parameter.count:
                words.append(draw(value_for(parameter)))
    if draw(st.booleans()):
        words = draw(st.permutations(words))
    # A sync gives up on the closed port at once, not after minutes of retries.
    retries = any("--max-attempts" in parameter.opts for parameter in command.params)
    return [*path, *words, *(["--max-attempts", "1"] if retries else [])]


environments = st.fixed_dictionaries(
    {"BASETEN_API_KEY": st.sampled_from(["fake-key", "k"]) | values},
    optional={
        DATABASE_URL_ENVVAR: st.sampled_from(["sqlite:///good.db", *DATABASE_URLS]),
        "BASETEN_API_URL": st.sampled_from(API_URLS),
    },
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A working directory holding a good archive, one stamped newer, an empty file and a text file."""
    directory = tmp_path_factory.mktemp("fuzz")
    good = db.make_engine(f"sqlite:///{directory / 'good.db'}")
    fakes.sync(good, fakes.small_org())
    good.dispose()
    newer = db.make_engine(f"sqlite:///{directory / 'newer.db'}")
    fakes.sync(newer, fakes.small_org())
    newer.dispose()
    with sqlite3.connect(directory / "newer.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0042'")
    (directory / "empty.db").touch()
    (directory / "text.db").write_text("not a database\n")
    (directory / "key.txt").write_bytes(b"\xff\xfe binary key")
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield directory
    finally:
        os.chdir(before)


def assert_clean(args: list[str], env: dict[str, str], exit_code: int, output: str) -> None:
    where = f"archiver {' '.join(map(repr, args))} with {env}"
    assert "Traceback" not in output, f"{where} printed a traceback:\n{output}"
    assert exit_code in DOCUMENTED, f"{where} exited {exit_code}:\n{output}"


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,  # a fixed seed: the same cases every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(args=command_lines(), env=environments)
def test_no_command_line_ends_in_a_traceback(scratch: Path, args: list[str], env: dict[str, str]) -> None:
    unset = {name: None for name in ENVIRONMENT if name not in env}
    result = CliRunner().invoke(cli, args, env={**unset, **env}, catch_exceptions=False)
    assert_clean(args, env, result.exit_code, result.output)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["db", "upgrade", "0005x"],
        ["db", "downgrade", "banana", "--yes"],
        ["query", "SELECT 1", "--database-url", "postgresql://x:y@[::1"],
        ["query", "SELECT 1", "--database-url", "postgresql://postgres@127.0.0.1:99999/test"],
        ["query", "SELECT 1", "--database-url", "sqlite:///newer.db"],
        ["sync", "--api-url", "http://[::1", "--api-key", "k"],
        ["sync", "--api-key-file", "key.txt"],
        ["sync", "--api-key-file", "no-such-file"],
        ["demo", "--database-url", "sqlite:///%00"],
        ["demo", "--database-url", "postgresql://x:y@[::1"],
        ["demo", "--seed", "-1e400"],
        ["fake-api", "--port", "99999"],
        ["fake-api", "--host", "[::1"],
    ],
    ids=" ".join,
)
def test_a_subprocess_says_one_line(scratch: Path, args: list[str]) -> None:
    result = run_archiver(*args, cwd=scratch, env={"BASETEN_API_URL": f"http://127.0.0.1:{CLOSED}"})
    assert_clean(args, {}, result.exit_code, result.output)
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error:")]
    assert result.exit_code != 0 and len(errors) == 1, result.stderr
