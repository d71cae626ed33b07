"""Nightly operation: history that can be queried, incremental runs, and runs cron can trust."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from archiver import db
from archiver.fake_api import TERMINAL_STATUSES, FakeBaseten, Faults, OrgSpec, serve
from archiver.sync import Scope, SyncOptions, SyncReport

from .support import fakes
from .support.commands import run_archiver, start_archiver, sync_env
from .support.databases import rows, scalar
from .support.times import utc
from .support.waiting import wait_for

NIGHT = [datetime(2026, 6, day, 2, 15, tzinfo=UTC) for day in (1, 2, 3)]


def nightly(
    engine: Engine, fake: FakeBaseten, night: datetime, options: SyncOptions | None = None
) -> SyncReport:
    """One night's sync, in-process."""
    return fakes.sync(engine, fake, options, clock=lambda: night)


def live_checkpoints(engine: Engine, job_id: str) -> int:
    return len(
        rows(
            engine,
            "SELECT checkpoint_id FROM checkpoints WHERE training_job_id = :j AND deleted_at IS NULL",
            j=job_id,
        )
    )


@pytest.fixture
def fake() -> FakeBaseten:
    return FakeBaseten(
        OrgSpec(seed=21, projects=3, jobs_per_project=3, checkpoints_per_job=4, active_fraction=0.34)
    )


@pytest.fixture
def api_url(fake: FakeBaseten) -> Iterator[str]:
    with serve(fake) as url:
        yield url


def test_three_nights_leave_exactly_the_expected_history(fake: FakeBaseten, archive: Engine) -> None:
    projects = fake.project_ids()
    doomed_project, kept = projects[0], projects[1:]
    doomed_checkpoints = sum(len(fake.checkpoints(j)) for j in fake.job_ids(doomed_project))
    jobs = [j for p in kept for j in fake.job_ids(p)]
    running = next(j for j in jobs if fake.job(j)["current_status"] not in TERMINAL_STATUSES)
    shrinking = next(j for j in jobs if j != running and len(fake.checkpoints(j)) >= 2)
    growing = next(j for j in jobs if j not in (running, shrinking))
    first_status = {j: fake.job(j)["current_status"] for j in fake.job_ids()}

    # Night 1: everything is new.
    one = nightly(archive, fake, NIGHT[0])
    assert one.exit_code == 0 and one.counts.checkpoints_inserted == fake.total_checkpoints()

    # During day 2: a checkpoint is added, one deleted, a job finishes, a project is deleted.
    added = fake.add_checkpoint(growing)["checkpoint_id"]
    removed = fake.checkpoints(shrinking)[0]["checkpoint_id"]
    fake.delete_checkpoint(shrinking, removed)
    fake.set_job(running, current_status="TRAINING_JOB_COMPLETED")
    fake.delete_project(doomed_project)
    two = nightly(archive, fake, NIGHT[1])
    assert two.exit_code == 0
    assert (two.counts.checkpoints_inserted, two.counts.checkpoints_deleted) == (1, 1 + doomed_checkpoints)

    # During day 3: the deleted checkpoint comes back; nothing else changes.
    fake.add_checkpoint(shrinking, checkpoint_id=removed)
    three = nightly(archive, fake, NIGHT[2])
    assert (
        three.exit_code == 0
        and three.counts.checkpoints_deleted == 0
        and three.counts.checkpoints_updated == 1
    )

    deleted = {
        (job, checkpoint): utc(at)
        for job, checkpoint, at in rows(
            archive,
            "SELECT training_job_id, checkpoint_id, deleted_at FROM checkpoints WHERE deleted_at IS NOT NULL",
        )
    }
    assert deleted == {
        (job, c["checkpoint_id"]): NIGHT[1]
        for job in fake_jobs_of(archive, doomed_project)
        for c in archived_ids(archive, job)
    }
    assert (
        utc(
            scalar(
                archive,
                "SELECT first_seen_at FROM checkpoints WHERE training_job_id = :j AND checkpoint_id = :c",
                j=growing,
                c=added,
            )
        )
        == NIGHT[1]
    )
    assert (
        utc(scalar(archive, "SELECT deleted_at FROM training_projects WHERE id = :p", p=doomed_project))
        == NIGHT[1]
    )
    assert rows(archive, "SELECT COUNT(*) FROM training_jobs WHERE deleted_at IS NOT NULL") == [
        (len(fake_jobs_of(archive, doomed_project)),)
    ]
    assert scalar(archive, "SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NULL") == len(kept)

    history = rows(
        archive,
        "SELECT training_job_id, status, observed_at, sync_run_id FROM training_job_status_history "
        "ORDER BY observed_at, training_job_id",
    )
    expected = [(j, first_status[j], NIGHT[0], one.run_id) for j in first_status]
    expected.append((running, "TRAINING_JOB_COMPLETED", NIGHT[1], two.run_id))
    assert sorted((j, s, utc(at), run) for j, s, at, run in history) == sorted(expected)

    runs = rows(
        archive,
        "SELECT id, status, checkpoints_inserted, checkpoints_updated, checkpoints_deleted, "
        "jobs_failed, started_at FROM sync_runs ORDER BY id",
    )
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], utc(r[6])) for r in runs] == [
        (one.run_id, "succeeded", fake.total_checkpoints() - 1 + doomed_checkpoints, 0, 0, 0, NIGHT[0]),
        (two.run_id, "succeeded", 1, 0, 1 + doomed_checkpoints, 0, NIGHT[1]),
        (three.run_id, "succeeded", 0, 1, 0, 0, NIGHT[2]),
    ]


def fake_jobs_of(engine: Engine, project_id: str) -> list[str]:
    return [
        str(r[0])
        for r in rows(engine, "SELECT id FROM training_jobs WHERE training_project_id = :p", p=project_id)
    ]


def archived_ids(engine: Engine, job_id: str) -> list[dict[str, str]]:
    return [
        {"checkpoint_id": str(r[0])}
        for r in rows(engine, "SELECT checkpoint_id FROM checkpoints WHERE training_job_id = :j", j=job_id)
    ]


def test_an_unchanged_organisation_costs_one_request_per_project(archive: Engine) -> None:
    fake = FakeBaseten(
        OrgSpec(seed=5, projects=4, jobs_per_project=5, checkpoints_per_job=3, active_fraction=0.0)
    )
    first = nightly(archive, fake, NIGHT[0])
    assert first.counts.jobs_fetched == len(fake.job_ids())
    # A second run straight after (the periodic re-reads of --recheck-after are spread over days).
    fake.reset_metrics()
    second = nightly(archive, fake, NIGHT[0] + timedelta(minutes=1))
    assert fake.request_count() == 1 + len(fake.project_ids())
    assert (second.counts.jobs_skipped, second.counts.jobs_fetched) == (len(fake.job_ids()), 0)
    # A job that changes is read again; --full reads them all.
    changed = fake.job_ids()[2]
    fake.set_job(changed, error_message="re-run by the platform team")
    fake.reset_metrics()
    third = nightly(archive, fake, NIGHT[0] + timedelta(minutes=2))
    assert third.counts.jobs_fetched == 1 and fake.request_count() == 2 + len(fake.project_ids())
    fake.reset_metrics()
    full = nightly(archive, fake, NIGHT[0] + timedelta(minutes=3), SyncOptions(full=True))
    assert full.counts.jobs_fetched == len(fake.job_ids()) and full.counts.jobs_skipped == 0
    assert scalar(archive, "SELECT jobs_skipped FROM sync_runs WHERE id = :r", r=second.run_id) == len(
        fake.job_ids()
    )


def test_a_scoped_run_marks_nothing_outside_its_scope(fake: FakeBaseten, archive: Engine) -> None:
    nightly(archive, fake, NIGHT[0])
    other_project, project = fake.project_ids()[0], fake.project_ids()[1]
    job = fake.job_ids(project)[0]
    fake.delete_project(other_project)
    fake.delete_job(fake.job_ids(project)[1])
    nightly(archive, fake, NIGHT[1], SyncOptions(scope=Scope(job_ids=(job,))))
    assert scalar(archive, "SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NOT NULL") == 0
    assert scalar(archive, "SELECT COUNT(*) FROM training_jobs WHERE deleted_at IS NOT NULL") == 0
    nightly(archive, fake, NIGHT[2], SyncOptions(scope=Scope(project_ids=(project,))))
    assert scalar(archive, "SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NOT NULL") == 0
    assert scalar(archive, "SELECT COUNT(*) FROM training_jobs WHERE deleted_at IS NOT NULL") == 1


def test_a_failed_job_marks_none_of_its_checkpoints_deleted(fake: FakeBaseten, archive: Engine) -> None:
    nightly(archive, fake, NIGHT[0], SyncOptions(full=True))
    job = fake.job_ids()[0]
    broken_fake = FakeBaseten(fake.spec, faults=Faults(broken_jobs={job: "not-json"}))
    report = nightly(archive, broken_fake, NIGHT[1], SyncOptions(full=True))
    assert report.exit_code == 3
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NOT NULL") == 0
    errors = rows(archive, "SELECT sync_run_id, job_id, kind FROM sync_errors")
    assert errors == [(report.run_id, job, "malformed")]
    assert scalar(archive, "SELECT status FROM sync_runs WHERE id = :r", r=report.run_id) == "partial"


def test_a_job_listing_naming_another_project_fails_that_project_and_marks_nothing(
    archive: Engine,
) -> None:
    """A project's job listing whose `training_project` is another project must not be archived
    as that other project: it used to mark every job of the other project deleted (outside the
    run's scope), or fail the whole run on a foreign key."""
    fake = fakes.small_org(projects=2)
    project, other = fake.project_ids()
    (other_job,) = fake.job_ids(other)
    assert nightly(archive, fake, NIGHT[0]).exit_code == 0

    listing = {
        "training_project": fake.project(other),
        "training_jobs": [fake.job(j) for j in fake.job_ids(project)],
    }
    fake.override("GET", f"/v1/training_projects/{project}/jobs", body=listing)
    report = nightly(archive, fake, NIGHT[1], SyncOptions(scope=Scope(project_ids=(project,))))

    assert report.exit_code == 3
    (failure,) = report.failures
    assert failure.project_id == project and "training_project" in failure.message
    assert rows(archive, "SELECT id FROM training_jobs WHERE deleted_at IS NOT NULL") == []
    assert live_checkpoints(archive, other_job) == 1
    name = fake.project(other)["name"]
    assert rows(archive, "SELECT name FROM training_projects WHERE id = :p", p=other) == [(name,)]


def test_a_new_project_whose_listing_names_another_project_is_a_partial_run_not_a_fatal_one(
    archive: Engine,
) -> None:
    fake = fakes.small_org()
    (other,) = fake.project_ids()
    assert nightly(archive, fake, NIGHT[0]).exit_code == 0
    project = fake.add_project(jobs=1, checkpoints_per_job=1)
    listing = {
        "training_project": fake.project(other),
        "training_jobs": [fake.job(j) for j in fake.job_ids(project)],
    }
    fake.override("GET", f"/v1/training_projects/{project}/jobs", body=listing)
    report = nightly(archive, fake, NIGHT[1])
    assert report.exit_code == 3
    assert [f.project_id for f in report.failures] == [project]


def test_a_mistyped_project_is_an_error_not_a_deletion(archive: Engine) -> None:
    fake = fakes.small_org()
    assert nightly(archive, fake, NIGHT[0]).exit_code == 0
    report = nightly(archive, fake, NIGHT[1], SyncOptions(scope=Scope(project_ids=("nosuch1",))))
    assert report.exit_code == 3
    assert [(f.project_id, f.kind) for f in report.failures] == [("nosuch1", "error")]
    assert "no such project" in str(report.failures[0])
    assert rows(archive, "SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NOT NULL") == [(0,)]


def test_a_finished_job_whose_uploader_is_still_syncing_is_read_again(archive: Engine) -> None:
    """A terminal job read while its uploader said SYNCING and no checkpoint was listed yet was
    skipped on every later night: the checkpoints that then appeared never reached the archive."""
    fake = fakes.small_org()
    (job_id,) = fake.job_ids()
    (uploaded,) = fake.checkpoints(job_id)
    fake.delete_checkpoint(job_id, uploaded["checkpoint_id"])
    fake.set_job(job_id, checkpoint_sync_status="SYNCING")
    updated_at = fake.job(job_id)["updated_at"]
    assert nightly(archive, fake, NIGHT[0]).exit_code == 0

    fake.add_checkpoint(job_id, **uploaded)
    fake.set_job(
        job_id, checkpoint_sync_status="COMPLETED", updated_at=updated_at
    )  # updated_at does not move
    report = nightly(archive, fake, NIGHT[1])

    assert report.counts.jobs_skipped == 0 and report.counts.checkpoints_inserted == 1
    assert live_checkpoints(archive, job_id) == 1


def test_a_finished_job_whose_uploader_is_still_syncing_is_not_skipped_with_complete_checkpoints(
    archive: Engine,
) -> None:
    fake = fakes.small_org()
    (job_id,) = fake.job_ids()
    fake.set_job(job_id, checkpoint_sync_status="SYNCING")
    updated_at = fake.job(job_id)["updated_at"]
    assert nightly(archive, fake, NIGHT[0]).exit_code == 0
    fake.add_checkpoint(job_id, checkpoint_id="late", sync_status="COMPLETE")
    fake.set_job(job_id, updated_at=updated_at)  # the uploader lists more without moving updated_at
    report = nightly(archive, fake, NIGHT[1])
    assert report.counts.jobs_skipped == 0 and report.counts.checkpoints_inserted == 1


def sync_process(url: str, database_url: str, *args: str) -> subprocess.Popen[str]:
    return start_archiver("sync", *args, env=sync_env(url, database_url))


def test_a_second_concurrent_sync_is_refused(archive: Engine, database_url: str) -> None:
    slow = FakeBaseten(
        OrgSpec(seed=2, projects=2, jobs_per_project=10, checkpoints_per_job=2), latency_ms=150
    )
    with serve(slow) as url:
        first = sync_process(url, database_url, "--concurrency", "1")
        try:
            wait_for(
                lambda: slow.request_count("/v1/training_projects/") > 2,
                "the first sync to list jobs",
                unless=lambda: first.poll() is not None,
            )
            second = run_archiver("sync", env=sync_env(url, database_url))
            # Not 1: "already running" is harmless, a refused key is not, and monitoring must tell them apart.
            assert second.exit_code == 75
            assert "another `archiver sync` is running" in second.stderr
        finally:
            _out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    assert scalar(archive, "SELECT COUNT(*) FROM sync_runs") == 1


def test_a_killed_run_leaves_a_consistent_archive_and_is_recorded(archive: Engine, database_url: str) -> None:
    spec = OrgSpec(seed=8, projects=2, jobs_per_project=12, checkpoints_per_job=6)
    slow = FakeBaseten(spec, latency_ms=100)
    with serve(slow) as url:
        victim = sync_process(url, database_url, "--concurrency", "2")
        wait_for(
            lambda: slow.request_count("/v1/training_projects/") > 8,
            "the sync to fetch checkpoints",
            unless=lambda: victim.poll() is not None,
        )
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    assert scalar(archive, "SELECT status FROM sync_runs") == "running"
    # Every job is archived whole or not at all.
    partial = rows(
        archive,
        "SELECT j.id FROM training_jobs j JOIN checkpoints c ON c.training_job_id = j.id "
        "WHERE j.checkpoints_fetched_at IS NULL",
    )
    assert partial == []
    fake = FakeBaseten(spec)
    with serve(fake) as url:
        again = run_archiver("sync", env=sync_env(url, database_url))
    assert again.exit_code == 0, again.output
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints") == fake.total_checkpoints()
    assert (
        scalar(
            archive,
            "SELECT COUNT(*) FROM (SELECT training_job_id, checkpoint_id FROM checkpoints "
            "GROUP BY 1, 2 HAVING COUNT(*) > 1) d",
        )
        == 0
    )
    runs = rows(archive, "SELECT status, error_summary FROM sync_runs ORDER BY id")
    assert [r[0] for r in runs] == ["failed", "succeeded"]
    assert "killed or crashed" in str(runs[0][1])


def test_runs_command_lists_runs(fake: FakeBaseten, archive: Engine, database_url: str) -> None:
    nightly(archive, fake, NIGHT[0])
    nightly(archive, fake, NIGHT[1])
    table = run_archiver("runs", env={"ARCHIVER_DATABASE_URL": database_url})
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "started_at", "finished_at", "seconds"]
    assert len(lines) == 4 and all("succeeded" in line for line in lines[2:])
    as_json = run_archiver(
        "runs", "--format", "json", "--limit", "1", env={"ARCHIVER_DATABASE_URL": database_url}
    )
    (latest,) = json.loads(as_json.stdout)
    assert latest["status"] == "succeeded" and latest["jobs_skipped"] > 0


def test_sqlite_archive_is_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'archive.db'}")
    assert scalar(engine, "PRAGMA journal_mode") == "wal"
    assert scalar(engine, "PRAGMA busy_timeout") == db.SQLITE_BUSY_TIMEOUT_MS
    assert scalar(engine, "PRAGMA foreign_keys") == 1
    engine.dispose()


def readme_query(name: str) -> str:
    """The SQL block that follows `<!-- as-of: name -->` in the README."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    after = text.split(f"<!-- as-of: {name} -->", 1)[1]
    return after.split("```sql", 1)[1].split("```", 1)[0]


def test_the_readme_as_of_queries_answer_as_of_questions(fake: FakeBaseten, archive: Engine) -> None:
    nightly(archive, fake, NIGHT[0])
    before = {(j, c["checkpoint_id"]): c["size_bytes"] for j in fake.job_ids() for c in fake.checkpoints(j)}
    project_of = {j: fake.job(j)["training_project_id"] for j in fake.job_ids()}
    doomed = fake.project_ids()[0]
    job = fake.job_ids(fake.project_ids()[1])[0]
    removed = fake.checkpoints(job)[0]["checkpoint_id"]
    fake.delete_checkpoint(job, removed)
    added = fake.add_checkpoint(fake.job_ids(fake.project_ids()[2])[0])
    fake.delete_project(doomed)
    nightly(archive, fake, NIGHT[1])

    after = {k: v for k, v in before.items() if project_of[k[0]] != doomed and k != (job, removed)}
    after[(added["training_job_id"], added["checkpoint_id"])] = added["size_bytes"]
    for date, expected in (("2026-06-02", before), ("2026-06-03", after)):
        existing = rows(archive, readme_query("checkpoints").replace("2026-06-02", date))
        assert {(r[1], r[2]): r[3] for r in existing} == expected
        storage = rows(archive, readme_query("storage").replace("2026-06-02", date))
        by_project: dict[str, list[int]] = {}
        for (job_id, _), size in expected.items():
            by_project.setdefault(project_of[job_id], []).append(size)
        assert {r[0]: (r[2], r[3]) for r in storage} == {p: (len(s), sum(s)) for p, s in by_project.items()}


def test_logging_is_quiet_by_default_and_json_on_request(
    fake: FakeBaseten, api_url: str, database_url: str
) -> None:
    env = sync_env(api_url, database_url)
    quiet = run_archiver("sync", env=env)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert len(quiet.stdout.strip().splitlines()) == 1  # the summary paragraph only
    loud = run_archiver("sync", "--full", "-v", "--log-format", "json", env=env)
    assert loud.exit_code == 0, loud.output
    events = [json.loads(line) for line in loud.stderr.splitlines()]
    jobs = {e["job_id"] for e in events if e.get("event") == "job"}
    assert jobs == set(fake.job_ids())
    assert all(e["level"] == "info" and e["time"].endswith("+00:00") for e in events)
