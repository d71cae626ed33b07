"""`archiver rebuild` replays the kept responses into an empty database: the result equals the archive."""

from __future__ import annotations

import signal
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, normalize
from archiver.errors import ArchiverError
from archiver.fake_api import FakeBaseten, Faults, OrgSpec, serve
from archiver.normalize import Row

from .support.archive_dump import dump
from .support.commands import run_archiver, start_archiver, sync_env
from .support.databases import rows, scalar
from .support.fakes import sync
from .support.nights import play
from .support.times import stopped
from .support.waiting import wait_for


def rebuilt(source_url: str, target_url: str) -> Engine:
    """Run the real `archiver rebuild` and open what it built."""
    result = run_archiver("rebuild", "--from", source_url, "--database-url", target_url)
    assert result.exit_code == 0, result.output
    assert "Replayed" in result.stdout
    return db.make_engine(target_url)


def test_rebuild_equals_the_archive_after_nights_of_changes(
    archive: Engine, database_url: str, new_database: Callable[[], str]
) -> None:
    play(archive)
    copy = rebuilt(database_url, new_database())
    # Every table, versions and their periods included; only surrogate ids and the run ledger differ.
    assert dump(copy, times=True) == dump(archive, times=True)
    assert scalar(copy, "SELECT COUNT(*) FROM checkpoint_history") == scalar(
        archive, "SELECT COUNT(*) FROM checkpoint_history"
    )


def test_rebuild_keeps_the_runs_own_times(
    archive: Engine, database_url: str, new_database: Callable[[], str]
) -> None:
    play(archive)
    times = "SELECT started_at, finished_at, status FROM sync_runs ORDER BY started_at, id"
    original = rows(archive, times)
    assert len(original) > 1 and all(finished is not None for _, finished, _ in original)
    copy = rebuilt(database_url, new_database())
    assert rows(copy, times) == original


def test_rebuild_equals_the_archive_after_a_faulty_night_and_its_reruns(
    archive: Engine, database_url: str, new_database: Callable[[], str]
) -> None:
    spec = OrgSpec(seed=3, projects=3, jobs_per_project=3, checkpoints_per_job=4)
    faults = Faults(seed=9, rate=0.3, kinds=("429", "500", "503", "reset", "truncate"), retry_after_s=0)
    faulty, quiet = FakeBaseten(spec, faults=faults), FakeBaseten(spec)
    night = datetime(2026, 9, 1, 3, 0, tzinfo=UTC)
    outcomes, clean = [], False
    for rerun in range(10):  # a faulty night (one attempt per request), then quiet reruns until clean
        try:
            report = sync(
                archive, faulty if rerun == 0 else quiet, clock=stopped(night + timedelta(minutes=rerun))
            )
        except ArchiverError as exc:  # the project listing itself failed: a fatal night
            outcomes.append(str(exc))
            continue
        outcomes.append(report.summary())
        if clean := not report.failures:
            break
    assert clean and len(outcomes) > 1, outcomes
    copy = rebuilt(database_url, new_database())
    assert dump(copy, times=True) == dump(archive, times=True)


@pytest.mark.slow
def test_rebuild_equals_the_archive_after_a_killed_run(
    archive: Engine, database_url: str, new_database: Callable[[], str]
) -> None:
    fake = FakeBaseten(
        OrgSpec(seed=13, projects=2, jobs_per_project=6, checkpoints_per_job=4), latency_ms=150
    )
    with serve(fake) as api_url:
        process = start_archiver("sync", "--concurrency", "2", env=sync_env(api_url, database_url))
        wait_for(
            lambda: fake.request_count("/v1/training_projects/") >= 8,
            "checkpoint reads under way",
            unless=lambda: process.poll() is not None,
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        partial = scalar(archive, "SELECT COUNT(*) FROM checkpoints")
        assert int(str(partial)) < fake.total_checkpoints()  # it died part-way; what it committed is whole
        assert dump(rebuilt(database_url, new_database()), times=True) == dump(archive, times=True)
        rerun = run_archiver("sync", env=sync_env(api_url, database_url))
        assert rerun.exit_code == 0, rerun.output
    assert dump(rebuilt(database_url, new_database()), times=True) == dump(archive, times=True)


def test_a_parser_fix_reaches_the_past(
    archive: Engine, database_url: str, new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBaseten(OrgSpec(seed=5, projects=1, jobs_per_project=2, checkpoints_per_job=3))
    lossy = normalize.checkpoint_row

    def buggy(data: object, where: normalize.Where, job_id: str) -> tuple[Row, Row | None]:
        row, config = lossy(data, where, job_id)
        return {**row, "base_model": None}, config  # a parser that lost a field

    with monkeypatch.context() as patch:
        patch.setattr(normalize, "checkpoint_row", buggy)
        assert sync(archive, fake).exit_code == 0
    assert rows(archive, "SELECT COUNT(*) FROM checkpoints WHERE base_model IS NOT NULL") == [(0,)]
    fixed = rebuilt(database_url, new_database())
    served = {c["base_model"] for job in fake.job_ids() for c in fake.checkpoints(job)} - {None}
    assert (
        served
        and {m for (m,) in rows(fixed, "SELECT DISTINCT base_model FROM checkpoints")} - {None} == served
    )


def test_rebuild_writes_into_an_empty_database_only(archive: Engine, database_url: str) -> None:
    assert sync(archive, FakeBaseten(OrgSpec(seed=1, projects=1))).exit_code == 0
    result = run_archiver("rebuild", "--from", database_url, "--database-url", database_url)
    assert result.exit_code == 2 and "not empty" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("damage", ["other JSON", "not zlib"])
def test_a_corrupt_kept_body_stops_the_rebuild_by_name_unless_skipped(
    archive: Engine, database_url: str, new_database: Callable[[], str], damage: str
) -> None:
    """A kept body replaced by other valid JSON replayed silently; a garbled one ended in exit 70."""
    fake = FakeBaseten(OrgSpec(seed=4, projects=2, jobs_per_project=2, checkpoints_per_job=2))
    assert sync(archive, fake).exit_code == 0
    (body_id, run_id, path) = rows(
        archive,
        "SELECT b.id, r.sync_run_id, r.path FROM api_response_bodies b JOIN api_responses r ON r.body_id = b.id "
        "WHERE r.path LIKE '%/checkpoints' ORDER BY b.id LIMIT 1",
    )[0]
    replacement = (
        zlib.compress(b'{"training_job": null, "checkpoints": []}') if damage == "other JSON" else b"?"
    )
    with archive.begin() as connection:
        connection.execute(
            sa.text("UPDATE api_response_bodies SET body = :body WHERE id = :id"),
            {"body": replacement, "id": body_id},
        )
    target = new_database()
    stopped_ = run_archiver("rebuild", "--from", database_url, "--database-url", target)
    assert stopped_.exit_code == 1, stopped_.output
    assert f"run {run_id}: the kept response to GET {path}" in stopped_.stderr
    assert "--skip-corrupt" in stopped_.stderr and len(stopped_.stderr.splitlines()) == 1
    skipped = run_archiver(
        "rebuild", "--skip-corrupt", "--from", database_url, "--database-url", new_database()
    )
    assert skipped.exit_code == 0, skipped.output
    assert "Skipped 1 corrupt kept responses" in skipped.stdout and str(path) in skipped.stdout
