"""Installing for production: the distribution's name, every install line, the systemd units."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from archiver import db, migrate, snapshot
from archiver.cli import COMMANDS, cli

from .support.commands import archiver_command
from .support.databases import IN_CI

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "baseten-checkpoint-archiver"
SYSTEMD = ROOT / "contrib" / "systemd"


def test_the_distribution_has_a_name_of_its_own_and_installs_the_archiver_command() -> None:
    """`archiver` on the public index is an unrelated 2011 project: `pip install archiver` installed it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    assert project["requires-python"] == ">=3.11"
    scripts = {entry.name: entry.value for entry in metadata.distribution(DISTRIBUTION).entry_points}
    assert scripts["archiver"] == "archiver.entry:main"


def test_every_install_line_names_this_distribution() -> None:
    sources = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "archiver").rglob("*.py")),
    ]
    lines = [
        (path.name, line)
        for path in sources
        for line in path.read_text().splitlines()
        if re.search(r"pip install", line)
    ]
    assert lines
    for name, line in lines:
        for target in re.findall(r"pip install (?:-\S+ )*'?([^\s'`]+)", line):
            assert not re.match(r"archiver\b", target), f"{name}: {line.strip()}"
    readme = (ROOT / "README.md").read_text()
    assert f"pip install '{DISTRIBUTION}[postgres]'" in readme and "Python 3.11 or newer" in readme


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values]}}, with continued lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if header := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(header[1], {})
            continue
        key, equals, value = line.partition("=")
        assert current is not None and equals, f"{path.name}: not a unit file line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def exec_start() -> list[str]:
    (line,) = unit(SYSTEMD / "archiver.service")["Service"]["ExecStart"]
    return shlex.split(line)


CREDENTIALS = "${CREDENTIALS_DIRECTORY}/"


def test_the_service_runs_a_sync_the_command_line_accepts(tmp_path: Path) -> None:
    service = unit(SYSTEMD / "archiver.service")["Service"]
    argv = exec_start()
    assert argv[0] == "/srv/archiver/.venv/bin/archiver" and argv[1] == "sync"
    # The key comes from the credential systemd loads, not the environment; ${CREDENTIALS_DIRECTORY}
    # works on every systemd with credentials (%d needs 251 or newer).
    credential = service["LoadCredential"][0].split(":", 1)[0]
    assert argv[argv.index("--api-key-file") + 1] == f"{CREDENTIALS}{credential}"
    assert not any(value.startswith("BASETEN_API_KEY") for value in service.get("Environment", []))
    sync = cli.commands["sync"]
    # Options that do not exist, or values they refuse, fail here as they would at 02:15; the
    # production machine's directories (the credential's, the metrics file's) stand in as tmp_path.
    args = [str(tmp_path / Path(arg).name) if arg.startswith(("/", CREDENTIALS)) else arg for arg in argv[2:]]
    context = sync.make_context("sync", args)
    assert isinstance(context, click.Context)
    assert service["Type"] == ["oneshot"]


def test_the_service_names_no_path_that_systemd_does_not_create_or_that_is_not_optional() -> None:
    """A unit that names a missing directory fails with 226/NAMESPACE on a clean machine.

    Every path the service writes must be one systemd creates for it (StateDirectory=), or marked
    optional with "-"; the program, the credential's source and the paths under them are read only.
    """
    service = unit(SYSTEMD / "archiver.service")["Service"]
    created = [f"/var/lib/{name}" for line in service["StateDirectory"] for name in line.split()]
    assert service["WorkingDirectory"] == ["/var/lib/archiver"] and "/var/lib/archiver" in created
    for key in ("ReadWritePaths", "ReadOnlyPaths", "BindPaths", "BindReadOnlyPaths"):
        for path in (p for line in service.get(key, []) for p in line.split()):
            assert path.startswith("-") or any(path.startswith(c) for c in created), f"{key}={path}"
    written = [arg for arg in exec_start() if arg.startswith("/") and not arg.endswith("/bin/archiver")]
    database = [v.split("=", 1)[1] for v in service["Environment"] if v.startswith("ARCHIVER_DATABASE_URL=")]
    written += [url.removeprefix("sqlite:///") for url in database if url.startswith("sqlite:")]
    assert written
    for path in written:
        assert any(path.startswith(c + "/") for c in created), f"{path} is not in a directory systemd creates"


def _systemd_analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if IN_CI:
            pytest.fail("systemd-analyze is not installed on the CI machine: the unit cannot be verified")
        pytest.skip("systemd-analyze is not installed (the unit files are still parsed above)")
    return analyze


def test_systemd_rates_the_service_2_5_or_less_exposed() -> None:
    """`systemd-analyze security` scores 0 (locked down) to 10 (exposed); 2.5 or less is what we ship."""
    done = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", "--threshold=25", "--no-pager", "archiver.service"],
        cwd=SYSTEMD,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-600:] + done.stderr
    assert re.search(r"Overall exposure level for archiver.service: [0-2]\.\d", done.stdout), done.stdout[
        -300:
    ]


def test_the_timer_catches_up_on_missed_nights() -> None:
    timer = unit(SYSTEMD / "archiver.timer")
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    # verify checks that ExecStart's program exists: point it at this checkout's command.
    program = archiver_command()
    if len(program) != 1:
        pytest.skip("no archiver console script to stand in for /srv/archiver/.venv/bin/archiver")
    service = (
        (SYSTEMD / "archiver.service").read_text().replace("/srv/archiver/.venv/bin/archiver", program[0])
    )
    (tmp_path / "archiver.service").write_text(service)
    shutil.copy(SYSTEMD / "archiver.timer", tmp_path / "archiver.timer")
    done = subprocess.run(
        [analyze, "verify", "--man=no", "archiver.service", "archiver.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    # Unknown keys and bad values are warnings with status 0: any output at all is a finding.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_the_readme_shows_how_to_install_the_units() -> None:
    readme = (ROOT / "README.md").read_text()
    for needed in ("contrib/systemd/archiver.service", "contrib/systemd/archiver.timer", "Persistent=true"):
        assert needed in readme
    assert "LoadCredential=" in readme and "$CREDENTIALS_DIRECTORY" in readme
    assert "StateDirectory=" in readme and "/var/lib/archiver/metrics" in readme
    assert "_ARCHIVER_COMPLETE=bash_source archiver" in readme


def test_a_wheel_ships_every_package_of_the_tree() -> None:
    """`pip install .` (not `-e`) installs what `[tool.setuptools] packages` lists: `archiver.sync`,
    split out of `sync.py`, was left off, and the installed `archiver` failed on import."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tree = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "archiver").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    tree |= {"archiver._migrations", "archiver._migrations.versions"}  # migrations/, shipped inside
    assert tree == listed


def test_a_wheel_ships_the_schema_snapshot() -> None:
    """Without migrations/sqlite-head.sql an installed archiver still makes new archives, by running every
    revision, a quarter of a second slower (`archiver.snapshot`): it must be in the package data."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert snapshot.FILENAME in data["archiver._migrations"]
    assert (ROOT / "migrations" / snapshot.FILENAME).is_file()


def run_command(argv: list[str], then: str) -> str:
    """Run the `archiver` console script's `main` with `argv` in a new process, then the code `then`
    (`status` holds the exit status); return the last line it prints."""
    script = f"import sys\nfrom archiver.entry import main\nsys.argv = {['archiver', *argv]!r}\nstatus = main()\n{then}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def test_the_command_does_not_load_httpxs_command_line_client() -> None:
    """httpx loads its own command line client (rich, pygments) when they are installed: a good part of
    every start. The `archiver` command keeps it from doing so; its requests are made as ever."""
    then = (
        "import httpx\n"
        "response = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204))).get('http://x/')\n"
        "print(status, response.status_code, 'rich' in sys.modules, 'pygments' in sys.modules)\n"
    )
    assert run_command(["--version"], then) == "0 204 False False"


def test_migrating_a_database_does_not_load_makos_syntax_highlighting(tmp_path: Path) -> None:
    """Alembic brings Mako, which highlights its error pages with pygments when it is installed: 50 ms
    of every first load. The `archiver` command keeps it from doing so; the schema is made as ever."""
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    then = (
        "import mako.exceptions, sqlalchemy as sa\n"
        f"tables = sa.inspect(sa.create_engine({url!r})).get_table_names()\n"
        "print(status, 'checkpoints' in tables, 'pygments' in sys.modules, mako.exceptions.pygments_html_formatter)\n"
    )
    assert run_command(["db", "upgrade", "--database-url", url], then) == "0 True False None"


def test_the_collector_skips_the_imports_and_runs_during_the_command() -> None:
    """The collector makes no pass while the command line loads (some 110 for `sync`), and what the
    imports made is out of its reach: during the command it runs, over the command's own objects."""
    then = "import gc\nprint(status, gc.isenabled(), gc.get_freeze_count() > 20000, gc.get_stats()[0]['collections'] < 40)\n"
    assert run_command(["sync", "--help"], then) == "0 True True True"


def test_a_command_loads_its_own_module_and_not_the_other_commands() -> None:
    """Each command's module is imported when that command runs: a nightly sync does not load the
    fake API's generator, the checks, the reports or the query modules."""
    then = (
        "print(status, sorted(m for m in sys.modules if m.startswith(('archiver.commands.', 'archiver.fake_api'))),"
        " 'archiver.query' in sys.modules)\n"
    )
    assert (
        run_command(["sync", "--help"], then)
        == "0 ['archiver.commands.shared', 'archiver.commands.sync'] False"
    )


def test_every_command_is_found_by_its_name() -> None:
    """The group names each command before loading it: the name must be the command's own."""
    names = list(cli.commands)
    assert names == sorted(COMMANDS) and len(names) == 10
    for name in names:
        command = cli.commands[name]
        assert isinstance(command, click.Command) and command.name == name
    assert "no-such-command" not in cli.commands
    result = CliRunner().invoke(cli, ["sinc"])
    assert result.exit_code == 2 and "Did you mean 'sync'?" in result.output


def test_a_command_on_sqlite_does_not_load_postgresqls_dialect(tmp_path: Path) -> None:
    """PostgreSQL's dialect modules are some 30 ms of a start: a command on SQLite goes without them."""
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    then = "print(status, 'sqlalchemy.dialects.postgresql' in sys.modules, 'sqlalchemy.dialects.sqlite' in sys.modules)\n"
    assert run_command(["runs", "--database-url", url], then) == "0 False True"
