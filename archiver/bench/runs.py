"""Time real `archiver sync` runs against a fake API in another process, with the child's peak RSS."""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import archiver
from archiver import migrate
from archiver.bench.fake_server import FakeServer
from archiver.bench.phases import Breakdown
from archiver.fake_api import DEFAULT_API_KEY


def as_installed() -> None:
    """Compile the archiver's modules and its revisions to bytecode, as `pip install` does for an installed copy.

    Timed commands then start as a user's do. A checkout installed in editable mode has no bytecode until
    a run writes it, and on a machine that sets PYTHONDONTWRITEBYTECODE none ever is: each command
    compiled every module again, about 0.1 s of its time.
    """
    for directory in (Path(archiver.__file__).parent, Path(migrate.script_location())):
        compileall.compile_dir(directory, quiet=1)


@dataclass(frozen=True)
class SyncRun:
    """One `archiver sync` process as the benchmark saw it."""

    seconds: float
    peak_rss_mib: float
    requests: int
    rate_limited: int
    max_in_flight: int
    max_in_one_second: int
    checkpoints: int
    summary: str


def _env(server: FakeServer, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASETEN_", "ARCHIVER_"))}
    return env | {
        "BASETEN_API_URL": server.url,
        "BASETEN_API_KEY": DEFAULT_API_KEY,
        "ARCHIVER_DATABASE_URL": database_url,
    }


@dataclass(frozen=True)
class Launched:
    """A command run through the slim launcher (see `launch`): its wall time, peak RSS and output."""

    seconds: float
    peak_rss_mib: float
    stdout: str


def launch_timed(argv: list[str], env: dict[str, str], what: str) -> Launched:
    """Run argv through the slim launcher; fail loudly, naming it `what`, unless it exits 0."""
    # A child's peak RSS counts what its parent held when it was forked, and the benchmark process
    # itself is large: the launcher is small.
    launched = subprocess.run(
        [sys.executable, "-m", "archiver.bench.launch", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    *output, last = launched.stdout.splitlines() or [""]
    stdout = "\n".join(output)
    if launched.returncode != 0:
        raise RuntimeError(f"{what} exited {launched.returncode}:\n{stdout}\n{launched.stderr}")
    peak_kib, seconds = last.split()
    return Launched(seconds=float(seconds), peak_rss_mib=int(peak_kib) / 1024, stdout=stdout)


def run_sync(server: FakeServer, database_url: str, *options: str) -> SyncRun:
    """Run `archiver sync` against `server`; fail loudly unless it exits 0."""
    server.reset()
    command = [sys.executable, "-m", "archiver", "sync", "--migrate", *options]
    launched = launch_timed(command, _env(server, database_url), "archiver sync")
    seen = server.metrics()
    return SyncRun(
        seconds=launched.seconds,
        peak_rss_mib=launched.peak_rss_mib,
        requests=seen.requests,
        rate_limited=seen.rate_limited,
        max_in_flight=seen.max_in_flight,
        max_in_one_second=seen.max_in_one_second,
        checkpoints=seen.checkpoints,
        summary=launched.stdout.strip(),
    )


def profile_sync(server: FakeServer, database_url: str, method: str, *options: str) -> Breakdown:
    """Run `archiver sync` against `server` in a process that samples ("sample") or profiles ("cprofile")
    each of its threads (see `profiled`)."""
    server.reset()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "archiver.bench.profiled", method, *options],
        env=_env(server, database_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    last = (done.stdout.splitlines() or [""])[-1]
    if done.returncode != 0:
        raise RuntimeError(f"the profiled sync exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    breakdown = Breakdown.from_json(json.loads(last))
    breakdown.process_seconds = time.perf_counter() - started
    return breakdown
