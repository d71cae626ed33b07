"""Installing for production: the distribution's name, every install line, the systemd units."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import click
import pytest

from archiver.cli import cli

from .support.commands import archiver_command

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


def test_the_service_runs_a_sync_the_command_line_accepts(tmp_path: Path) -> None:
    service = unit(SYSTEMD / "archiver.service")["Service"]
    argv = exec_start()
    assert argv[0] == "/srv/archiver/.venv/bin/archiver" and argv[1] == "sync"
    # %d is $CREDENTIALS_DIRECTORY: the key comes from the credential systemd loads, not the environment.
    credential = service["LoadCredential"][0].split(":", 1)[0]
    assert argv[argv.index("--api-key-file") + 1] == f"%d/{credential}"
    assert not any(value.startswith("BASETEN_API_KEY") for value in service.get("Environment", []))
    sync = cli.commands["sync"]
    # Options that do not exist, or values they refuse, fail here as they would at 02:15; the
    # production machine's directories (the credential's, the metrics file's) stand in as tmp_path.
    args = [str(tmp_path / Path(arg).name) if arg.startswith(("/", "%d/")) else arg for arg in argv[2:]]
    context = sync.make_context("sync", args)
    assert isinstance(context, click.Context)
    assert service["Type"] == ["oneshot"]


def test_the_timer_catches_up_on_missed_nights() -> None:
    timer = unit(SYSTEMD / "archiver.timer")
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the unit files are still parsed above)")
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
    assert "_ARCHIVER_COMPLETE=bash_source archiver" in readme
