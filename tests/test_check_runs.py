"""Monitoring reads the nightly truth: `check` and the last-success metric count full runs only, and a
run whose process is gone is reported as died at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec, Response, serve

from .support.commands import Result, run_archiver, start_archiver, sync_env
from .support.databases import rows
from .support.waiting import wait_for
from .test_metrics import metrics


@pytest.fixture
def served() -> Iterator[tuple[FakeBaseten, str]]:
    fake = FakeBaseten(OrgSpec(seed=5, projects=2, jobs_per_project=2, checkpoints_per_job=2))
    with serve(fake) as url:
        yield fake, url


def check(database_url: str) -> tuple[Result, dict[str, str]]:
    result = run_archiver("check", "--database-url", database_url)
    lines = {line.split(":", 1)[0].split()[-1]: line for line in result.stdout.splitlines()}
    return result, lines


def test_a_scoped_run_after_a_failed_nightly_leaves_check_failing_and_the_metric_unchanged(
    served: tuple[FakeBaseten, str], database_url: str, tmp_path: Path
) -> None:
    fake, url = served
    prom = tmp_path / "archiver.prom"
    env = sync_env(url, database_url)
    assert run_archiver("sync", "--metrics-file", str(prom), env=env).exit_code == 0
    succeeded = metrics(prom)["archiver_last_success_timestamp_seconds"]
    failed = run_archiver("sync", "--metrics-file", str(prom), env=sync_env(url, database_url, "wrong-key-1"))
    assert failed.exit_code == 1, failed.output
    project = fake.project_ids()[0]
    scoped = run_archiver("sync", "--metrics-file", str(prom), "--project", project, env=env)
    assert scoped.exit_code == 0, scoped.output

    assert metrics(prom)["archiver_last_success_timestamp_seconds"] == succeeded
    result, lines = check(database_url)
    assert result.exit_code == 5, result.output
    assert lines["last_run"].startswith("ERROR") and "full run 2 failed" in lines["last_run"], result.stdout
    assert lines["freshness"].startswith("OK")  # the first night is still recent
    assert (
        lines["scoped"].startswith("OK") and f"scoped run 3 (projects {project}) succeeded" in lines["scoped"]
    )


def test_a_killed_run_shows_as_died_at_once(
    served: tuple[FakeBaseten, str], database_url: str, engine: Engine
) -> None:
    fake, url = served
    assert run_archiver("sync", env=sync_env(url, database_url)).exit_code == 0
    held = threading.Event()
    release = threading.Event()

    def stall(_method: str, path: str, _body: bytes) -> Response | None:
        if path.endswith("/checkpoints"):
            held.set()
            release.wait(60)
        return None

    fake.intercept(stall)
    process = start_archiver("sync", "--full", env=sync_env(url, database_url))
    try:
        wait_for(held.is_set, "the run's first checkpoint request", unless=lambda: process.poll() is not None)
        assert rows(engine, "SELECT status FROM sync_runs ORDER BY id") == [("succeeded",), ("running",)]
        result, lines = check(database_url)
        assert lines["running"].startswith("OK") and "run 2 running since" in lines["running"], result.output
        process.send_signal(signal.SIGKILL)
        process.wait(60)
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
            process.wait(60)

    def died() -> bool:  # the server notices the killed process's connections end, and frees its locks
        return "it died" in check(database_url)[1]["running"]

    wait_for(died, "check to find run 2 died")
    result, lines = check(database_url)
    assert result.exit_code == 5 and lines["running"].startswith("ERROR"), result.output
    assert (
        "run 2 started" in lines["running"] and "its process is gone (its lock is free)" in lines["running"]
    )
    assert rows(engine, "SELECT status FROM sync_runs ORDER BY id") == [("succeeded",), ("running",)]
