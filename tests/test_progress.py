"""What `archiver sync` shows while it runs: a bar on a terminal, records in JSON logs, else nothing."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
from collections.abc import Iterator

import pytest

from archiver.fake_api import FakeBaseten, OrgSpec, serve

from .support.commands import _environment, archiver_command, run_archiver, sync_env

SPEC = OrgSpec(seed=7, projects=3, jobs_per_project=4, checkpoints_per_job=5)
JOBS = SPEC.projects * SPEC.jobs_per_project


@pytest.fixture
def fake() -> FakeBaseten:
    return FakeBaseten(SPEC)


@pytest.fixture
def api_url(fake: FakeBaseten) -> Iterator[str]:
    with serve(fake) as url:
        yield url


def test_json_logs_carry_progress_records(fake: FakeBaseten, api_url: str, database_url: str) -> None:
    result = run_archiver(
        "sync",
        "--log-format",
        "json",
        "--progress-interval",
        "0",
        env=sync_env(api_url, database_url),
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines()]
    progress = [r for r in records if r.get("event") == "progress"]
    assert len(progress) > 1, result.stderr
    assert all({"jobs_done", "jobs_total", "checkpoints"} <= r.keys() for r in progress)
    done = [r["jobs_done"] for r in progress]
    assert done == sorted(done)
    last = progress[-1]
    assert (last["jobs_done"], last["jobs_total"]) == (JOBS, JOBS)
    assert last["checkpoints"] == fake.total_checkpoints()


def test_a_longer_interval_writes_fewer_records(api_url: str, database_url: str) -> None:
    result = run_archiver("sync", "--log-format", "json", env=sync_env(api_url, database_url))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines()]
    # 30s by default: the first step, and where the run ended.
    assert len([r for r in records if r.get("event") == "progress"]) == 2, result.stderr


def test_a_bad_interval_is_a_usage_error(database_url: str) -> None:
    result = run_archiver("sync", "--progress-interval", "soon", env={"ARCHIVER_DATABASE_URL": database_url})
    assert result.exit_code == 2 and "--progress-interval" in result.stderr, result.output


def test_a_non_terminal_stderr_gets_no_progress(api_url: str, database_url: str) -> None:
    result = run_archiver("sync", env=sync_env(api_url, database_url))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_a_terminal_shows_a_progress_bar(api_url: str, database_url: str) -> None:
    controller, terminal = pty.openpty()
    env = _environment(sync_env(api_url, database_url)) | {"COLUMNS": "160", "TERM": "xterm"}
    process = subprocess.Popen(
        [*archiver_command(), "sync"], env=env, stdout=subprocess.PIPE, stderr=terminal, text=True
    )
    os.close(terminal)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end closed: the process is gone
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        stdout = process.communicate(timeout=60)[0]
    assert process.returncode == 0, (stdout, shown)
    text = shown.decode(errors="replace")
    assert "jobs" in text, text
    assert re.search(rf"\b\d+/{JOBS}\b", text), text
    assert re.search(r"\b[\d,]+ checkpoints", text), text  # checkpoints done, beside the jobs
    assert stdout.startswith("Archived") and "/" not in stdout  # the summary on stdout stays clean
