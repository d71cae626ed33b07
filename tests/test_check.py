"""`archiver check`: a line per check, and an exit status monitoring can act on (0 ok, 4 warning, 5 error)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import ledger, migrate
from archiver.lock import sync_lock
from archiver.schema import RunCounts, sync_runs

from .support.commands import Result, run_archiver

NOW = datetime.now(UTC)
HEALTHY = {
    "database": "OK",
    "schema": "OK",
    "last_run": "OK",
    "freshness": "OK",
    "running": "OK",
    "scoped": "OK",
    "clock": "OK",
    "drain": "OK",
    "metrics": "OK",
}


def record_run(
    engine: Engine, started: datetime, status: str, *, failures: int = 0, summary: str | None = None
) -> int:
    """A sync_runs row as a run that started at `started` and ended (unless running) ten minutes later."""
    with engine.begin() as connection:
        run_id = ledger.start_run(connection, started, None, False, {})
    if status != ledger.RUNNING:
        errors = [
            {
                "project_id": "p1",
                "job_id": f"j{n}",
                "kind": "api",
                "message": "HTTP 500",
                "occurred_at": started,
            }
            for n in range(failures)
        ]
        ledger.finish_run(
            engine,
            run_id,
            status=status,
            finished_at=started + timedelta(minutes=10),
            counts=RunCounts(jobs_failed=failures).as_dict(),
            errors=errors,
            error_summary=summary,
        )
    return run_id


def check(database_url: str, *args: str) -> tuple[Result, dict[str, str]]:
    """Run `archiver check`; return the result and each check's status word."""
    result = run_archiver("check", "--database-url", database_url, *args)
    statuses = {}
    for line in result.stdout.splitlines():
        status, rest = line.split(maxsplit=1)
        statuses[rest.split(":", 1)[0]] = status
    return result, statuses


def test_a_good_night_is_ok(archive: Engine, database_url: str) -> None:
    now = datetime.now(UTC)  # not NOW: on a loaded machine the suite can take minutes to get here
    record_run(archive, now - timedelta(days=1, hours=3), ledger.FAILED, summary="the key was refused")
    run_id = record_run(archive, now - timedelta(hours=3), ledger.SUCCEEDED)
    result, statuses = check(database_url, "--max-age", "26h")
    assert result.exit_code == 0, result.output
    assert statuses == HEALTHY
    # It ended 2h 50m before `now`; a minute may turn while the command starts.
    assert f"run {run_id} succeeded" in result.stdout
    assert re.search(r"\(2h 5[01]m ago\)", result.stdout), result.stdout


def test_freshness_warns_then_errs_as_dbt_does(archive: Engine, database_url: str) -> None:
    record_run(archive, NOW - timedelta(hours=30), ledger.SUCCEEDED)
    result, statuses = check(database_url, "--max-age", "26h")
    assert result.exit_code == 5 and statuses == {**HEALTHY, "freshness": "ERROR"}
    assert "longer ago than --max-age 26 hours" in result.stdout

    result, statuses = check(database_url, "--warn-age", "1d", "--max-age", "2d")
    assert result.exit_code == 4 and statuses == {**HEALTHY, "freshness": "WARNING"}
    result, statuses = check(database_url, "--warn-age", "2d", "--max-age", "3d")
    assert result.exit_code == 0 and statuses == HEALTHY


@pytest.mark.parametrize(
    ("status", "word", "code"),
    [(ledger.PARTIAL, "WARNING", 4), (ledger.INTERRUPTED, "WARNING", 4), (ledger.FAILED, "ERROR", 5)],
)
def test_the_last_run_is_reported_with_its_failures(
    status: str, word: str, code: int, archive: Engine, database_url: str
) -> None:
    record_run(archive, NOW - timedelta(hours=20), ledger.SUCCEEDED)
    failures = 2 if status == ledger.PARTIAL else 0
    summary = "2 failed: project p1, job j0: HTTP 500" if failures else f"{status}: see the log"
    run_id = record_run(archive, NOW - timedelta(hours=2), status, failures=failures, summary=summary)
    result, statuses = check(database_url)
    assert result.exit_code == code, result.output
    assert statuses == {**HEALTHY, "last_run": word}
    line = next(line for line in result.stdout.splitlines() if "last_run:" in line)
    assert f"run {run_id} {status}" in line and summary in line and "`archiver runs" in line
    assert ("; 2 failed" in line) == bool(failures)
    assert line.count("failed:") <= 1, line  # not "2 failed: 2 failed: ..."


def test_a_run_stuck_running_is_an_error_and_a_young_one_is_not(archive: Engine, database_url: str) -> None:
    record_run(archive, NOW - timedelta(hours=12), ledger.SUCCEEDED)
    young = record_run(archive, NOW - timedelta(hours=1), ledger.RUNNING)
    with sync_lock(archive) as held:  # its process is alive: it holds the locks a sync holds
        held.hold_run(young)
        result, statuses = check(database_url)
        assert result.exit_code == 0 and statuses == HEALTHY, result.output
        assert f"run {young} running since" in result.stdout

        with archive.begin() as connection:  # the same run, as if it had started 30 hours ago
            connection.execute(
                sa.update(sync_runs)
                .where(sync_runs.c.id == young)
                .values(started_at=NOW - timedelta(hours=30))
            )
        result, statuses = check(database_url)
        assert result.exit_code == 5 and statuses == {**HEALTHY, "running": "ERROR"}
        assert "longer than --max-run-time 1 day" in result.stdout
        result, statuses = check(database_url, "--max-run-time", "2d")
        assert result.exit_code == 0 and statuses == HEALTHY


def test_an_archive_no_sync_has_finished_is_an_error(archive: Engine, database_url: str) -> None:
    result, statuses = check(database_url)
    assert result.exit_code == 5
    assert statuses == {**HEALTHY, "last_run": "ERROR", "freshness": "ERROR"}
    assert "run `archiver sync --database-url" in result.stdout


def test_an_out_of_date_schema_stops_the_checks_with_the_fix(engine: Engine, database_url: str) -> None:
    migrate.upgrade(engine, "0004")
    result, statuses = check(database_url)
    assert result.exit_code == 5 and statuses == {"database": "OK", "schema": "ERROR"}
    assert f"`archiver db upgrade --database-url {database_url}`" in result.stdout
    assert migrate.current_revision(engine) == "0004"


def test_an_unreachable_database_is_an_error_not_a_crash(database_kind: str, tmp_path: Any) -> None:
    url = (
        f"sqlite:///{tmp_path / 'missing.db'}"
        if database_kind == "sqlite"
        else "postgresql://archiver:pw-c0ffee-secret@127.0.0.1:9/archive"
    )
    result, statuses = check(url)
    assert result.exit_code == 5 and statuses == {"database": "ERROR"}, result.output
    assert "pw-c0ffee-secret" not in result.output and result.stderr == ""


def test_json_is_one_document_with_status_exit_code_and_checks(archive: Engine, database_url: str) -> None:
    record_run(archive, NOW - timedelta(hours=3), ledger.SUCCEEDED)
    result = run_archiver("check", "--database-url", database_url, "--format", "json", "--warn-age", "1h")
    assert result.exit_code == 4, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "warning" and document["exit_code"] == 4
    found = document["checks"]
    assert [(f["check"], f["status"]) for f in found] == [
        ("database", "ok"),
        ("schema", "ok"),
        ("last_run", "ok"),
        ("freshness", "warning"),
        ("running", "ok"),
        ("scoped", "ok"),
        ("clock", "ok"),
        ("drain", "ok"),
        ("metrics", "ok"),
    ]
    freshness = found[3]
    assert freshness["warn_age_seconds"] == 3600 and freshness["max_age_seconds"] == 26 * 3600
    assert 2.8 * 3600 < freshness["age_seconds"] < 3 * 3600 + 600


def test_durations_must_be_durations(database_url: str) -> None:
    result = run_archiver("check", "--database-url", database_url, "--max-age", "yesterday")
    assert result.exit_code == 2 and "--max-age" in result.stderr
