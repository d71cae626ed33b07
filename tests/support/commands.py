"""Run the real `archiver` command in a subprocess, as cron would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from archiver.fake_api import DEFAULT_API_KEY

# Never inherited from the developer's shell: each test says what it runs against.
_OWN_VARIABLES = {"BASETEN_API_KEY", "BASETEN_API_URL", "ARCHIVER_DATABASE_URL"}


@dataclass
class Result:
    """What a run of the `archiver` command printed and returned."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def archiver_command() -> list[str]:
    """The installed `archiver` console script, or `python -m archiver` beside this interpreter."""
    script = Path(sys.executable).parent / "archiver"
    if script.exists():
        return [str(script)]
    found = shutil.which("archiver")
    return [found] if found else [sys.executable, "-m", "archiver"]


def sync_env(api_url: str, database_url: str, key: str = DEFAULT_API_KEY) -> dict[str, str]:
    """The environment of a sync against `api_url` into `database_url`."""
    return {"BASETEN_API_URL": api_url, "BASETEN_API_KEY": key, "ARCHIVER_DATABASE_URL": database_url}


def _environment(env: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _OWN_VARIABLES} | (env or {})


def run_archiver(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    prefix: Sequence[str] = (),
) -> Result:
    """Run the real `archiver` command to its end (under `prefix`, a wrapper command, if given)."""
    completed = subprocess.run(
        [*prefix, *archiver_command(), *args],
        env=_environment(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def start_archiver(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the real `archiver` command in the background, its output piped."""
    return subprocess.Popen(
        [*archiver_command(), *args],
        env=_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


class Lines:
    """Read a stream in a background thread, so a test can wait for a line and still get them all."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None, "the stream is not piped"
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.append(line)

    def has(self, text: str) -> bool:
        """Tell whether a line read so far contains `text`."""
        return any(text in line for line in list(self._lines))

    def text(self) -> str:
        """Everything the stream carried, once it has ended."""
        self._thread.join()
        return "".join(self._lines)
