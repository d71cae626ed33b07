"""A deletion is recorded only when it really happened: the guard weighs what would be lost, a 404 needs its
parent's agreement, and a night's deletions are judged once every listing is in (issue 17, items 1, 2, 4)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec, Response
from archiver.sync import SyncOptions, SyncReport

from .support.commands import run_archiver
from .support.databases import rows, scalar
from .support.fakes import sync
from .support.times import stopped

NIGHTS = tuple(datetime(2026, 8, 1, 3, 0, tzinfo=UTC) + timedelta(days=n) for n in range(8))
HISTORY = ("training_project_history", "training_job_history", "checkpoint_history")
LIVE_CHECKPOINTS = "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NULL"
MARKED = (
    "SELECT (SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NOT NULL)"
    " + (SELECT COUNT(*) FROM training_jobs WHERE deleted_at IS NOT NULL)"
    " + (SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NOT NULL)"
)


def org(**spec: Any) -> FakeBaseten:
    return FakeBaseten(OrgSpec(**{"seed": 17, "active_fraction": 0.0, **spec}))


def exact_org(projects: int, jobs: int, checkpoints: int) -> FakeBaseten:
    """An organisation whose every job holds exactly `checkpoints` checkpoints."""
    fake = FakeBaseten(OrgSpec(seed=17, projects=0))
    for _ in range(projects):
        fake.add_project(jobs=jobs, checkpoints_per_job=checkpoints)
    return fake


def nightly(engine: Engine, fake: FakeBaseten, n: int, **options: Any) -> SyncReport:
    return sync(engine, fake, SyncOptions(**options), clock=stopped(NIGHTS[n]))


def archive_state(engine: Engine) -> list[tuple[object, ...]]:
    """What a refused night must leave alone: every row's values and deletion, and how many versions there are."""
    return [
        *rows(engine, "SELECT id, name, deleted_at FROM training_projects ORDER BY id"),
        *rows(engine, "SELECT id, training_project_id, deleted_at FROM training_jobs ORDER BY id"),
        *rows(
            engine,
            "SELECT training_job_id, checkpoint_id, size_bytes, deleted_at FROM checkpoints "
            "ORDER BY training_job_id, checkpoint_id",
        ),
        *[(table, scalar(engine, f"SELECT COUNT(*) FROM {table}")) for table in HISTORY],
    ]


def job_listing(fake: FakeBaseten, project_id: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"training_project": fake.project(project_id), "training_jobs": jobs}


def test_a_project_listing_cut_to_one_of_nine_marks_nothing(archive: Engine) -> None:
    fake = exact_org(9, 3, 40)
    assert nightly(archive, fake, 0).exit_code == 0
    assert scalar(archive, LIVE_CHECKPOINTS) == 1080
    before = archive_state(archive)
    kept = fake.project_ids()[0]
    fake.override("GET", "/v1/training_projects", body={"training_projects": [fake.project(kept)]})
    report = nightly(archive, fake, 1)
    assert report.exit_code == 3
    (failure,) = report.failures
    assert failure.kind == "suspect"
    assert "would mark 8 of 9 live projects deleted, with 24 jobs and 960 of 1,080 live checkpoints" in (
        failure.message
    )
    assert "--allow-mass-delete" in failure.message
    assert archive_state(archive) == before
    # A real mass deletion goes through when the operator says so, for that run.
    allowed = nightly(archive, fake, 2, allow_mass_delete=True)
    assert allowed.exit_code == 0 and allowed.counts.checkpoints_deleted == 960
    assert scalar(archive, LIVE_CHECKPOINTS) == 120


def test_a_job_listing_cut_to_one_of_nine_marks_nothing(archive: Engine) -> None:
    fake = exact_org(1, 9, 200)
    assert nightly(archive, fake, 0).exit_code == 0
    assert scalar(archive, LIVE_CHECKPOINTS) == 1800
    before = archive_state(archive)
    project = fake.project_ids()[0]
    first = fake.job(fake.job_ids(project)[0])
    fake.override("GET", f"/v1/training_projects/{project}/jobs", body=job_listing(fake, project, [first]))
    report = nightly(archive, fake, 1)
    assert report.exit_code == 3
    assert [(f.project_id, f.kind) for f in report.failures] == [(project, "suspect")]
    assert "would mark 8 of 9 live jobs deleted, with 1,600 of 1,800 live checkpoints" in (
        report.failures[0].message
    )
    assert archive_state(archive) == before


def answer_404(fake: FakeBaseten, matches: Callable[[str], bool]) -> None:
    def hook(_method: str, path: str, _body: bytes) -> Response | None:
        return Response.of(404, {"message": "Not found"}) if matches(path) else None

    fake.intercept(hook)


@pytest.mark.parametrize(
    "listing",
    [
        pytest.param(lambda path: path.count("/") == 4 and path.endswith("/jobs"), id="job-listings"),
        pytest.param(lambda path: path.endswith("/checkpoints"), id="checkpoint-listings"),
    ],
)
def test_404_on_every_listing_is_an_outage_that_marks_nothing(
    archive: Engine, listing: Callable[[str], bool]
) -> None:
    fake = org(projects=3, jobs_per_project=3, checkpoints_per_job=4)
    assert nightly(archive, fake, 0).exit_code == 0
    before = archive_state(archive)
    answer_404(fake, listing)
    for night in (1, 2):  # every night it lasts
        report = nightly(archive, fake, night, full=True)
        assert report.exit_code == 3
        kinds = {f.kind for f in report.failures}
        assert kinds == {"contradiction", "outage"}, kinds
        assert report.outage and "outage" in report.summary()
        assert scalar(archive, MARKED) == 0
    assert archive_state(archive) == before


def test_a_404_for_a_job_its_project_still_lists_is_a_contradiction(archive: Engine) -> None:
    fake = org(projects=2, jobs_per_project=3, checkpoints_per_job=4)
    assert nightly(archive, fake, 0).exit_code == 0
    job = fake.job_ids()[0]
    answer_404(fake, lambda path: path.endswith(f"/jobs/{job}/checkpoints"))
    report = nightly(archive, fake, 1, full=True)
    assert report.exit_code == 3 and not report.outage
    assert [(f.job_id, f.kind) for f in report.failures] == [(job, "contradiction")]
    assert scalar(archive, MARKED) == 0
    # Once its project's listing no longer has it, it is gone.
    fake.clear_overrides()
    project = fake.job(job)["training_project_id"]
    others = [fake.job(j) for j in fake.job_ids(project) if j != job]
    fake.override("GET", f"/v1/training_projects/{project}/jobs", body=job_listing(fake, project, others))
    assert nightly(archive, fake, 2).exit_code == 0
    assert rows(archive, "SELECT id FROM training_jobs WHERE deleted_at IS NOT NULL") == [(job,)]


def move_job(fake: FakeBaseten, job_id: str, to: str, *, slow: str) -> None:
    """Serve `job_id` under project `to` (and no longer under its own); answer `slow`'s job listing last."""
    source = fake.job(job_id)["training_project_id"]
    moved = {**fake.job(job_id), "training_project_id": to}

    def hook(_method: str, path: str, _body: bytes) -> Response | None:
        if path == f"/v1/training_projects/{slow}/jobs":
            time.sleep(0.3)  # not a timing assertion: it only makes the other listing complete first
        if path == f"/v1/training_projects/{source}/jobs":
            jobs = [fake.job(j) for j in fake.job_ids(source) if j != job_id]
            return Response.of(200, job_listing(fake, source, jobs))
        if path == f"/v1/training_projects/{to}/jobs":
            jobs = [fake.job(j) for j in fake.job_ids(to)] + [moved]
            return Response.of(200, job_listing(fake, to, jobs))
        if path.startswith(f"/v1/training_projects/{to}/jobs/{job_id}/checkpoints"):
            return Response.of(200, {"training_job": moved, "checkpoints": fake.checkpoints(job_id)})
        if path.startswith(f"/v1/training_projects/{source}/jobs/{job_id}"):
            return Response.of(404, {"message": "Training job not found"})
        return None

    fake.intercept(hook)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_job_that_moves_project_is_a_move_never_a_deletion(archive: Engine, concurrency: int) -> None:
    fake = org(projects=2, jobs_per_project=2, checkpoints_per_job=5)
    assert nightly(archive, fake, 0).exit_code == 0
    source, target = fake.project_ids()
    job = fake.job_ids(source)[0]
    # The new project's listing completes last: written in completion order, the old one would "delete" it.
    move_job(fake, job, target, slow=target)
    report = nightly(archive, fake, 1, full=True, concurrency=concurrency)
    assert report.exit_code == 0, report.failures
    assert report.counts.checkpoints_deleted == 0
    assert scalar(archive, MARKED) == 0
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoint_history WHERE deleted_at IS NOT NULL") == 0
    assert scalar(archive, "SELECT COUNT(*) FROM training_job_history WHERE deleted_at IS NOT NULL") == 0
    assert rows(archive, f"SELECT training_project_id FROM training_jobs WHERE id = '{job}'") == [(target,)]
    assert rows(
        archive,
        f"SELECT training_project_id FROM training_job_history WHERE id = '{job}' ORDER BY valid_from",
    ) == [(source,)]


DRAIN = (100, 51, 27, 14, 8, 5)  # 49% a night, each night under the guard's half


def test_a_job_drained_49_percent_a_night_is_reported_by_sync_and_check(
    archive: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = exact_org(1, 1, 100)
    (job,) = fake.job_ids()
    project = fake.project_ids()[0]
    served = fake.checkpoints(job)
    path = f"/v1/training_projects/{project}/jobs/{job}/checkpoints"
    # Nights ending an hour ago, so that `archiver check` (which reads the wall clock) looks back over them.
    start = datetime.now(UTC) - timedelta(days=len(DRAIN) - 1, hours=1)
    reports = []
    for night, live in enumerate(DRAIN):
        fake.override("GET", path, body={"training_job": fake.job(job), "checkpoints": served[:live]})
        with caplog.at_level("WARNING", logger="archiver.sync"):
            caplog.clear()
            reports.append(
                sync(archive, fake, SyncOptions(full=True), clock=stopped(start + timedelta(days=night)))
            )
        assert reports[-1].exit_code == 0, reports[-1].failures  # no night alone is suspect
        assert scalar(archive, LIVE_CHECKPOINTS) == live
    assert [r.draining for r in reports[:2]] == [[], []]  # 49 of 100: not yet
    drained = [(d.scope, d.id, d.lost, d.held) for d in reports[-1].draining]
    assert drained == [("project", project, 95, 100), ("job", job, 95, 100)]
    assert any("draining" in r.message and job in r.getMessage() for r in caplog.records)
    assert "Draining" in reports[-1].summary()
    result = run_archiver("check", "--database-url", database_url, "--format", "json")
    findings = {finding["check"]: finding for finding in json.loads(result.stdout)["checks"]}
    assert findings["drain"]["status"] == "warning", findings["drain"]
    assert {d["id"] for d in findings["drain"]["draining"]} == {job, project}
    assert result.exit_code == 4
    # A shorter window sees only the last night's loss (8 to 5): no drain.
    result = run_archiver("check", "--database-url", database_url, "--drain-window", "12h")
    assert "OK      drain" in result.stdout, result.stdout


def test_a_project_drained_a_few_checkpoints_a_job_is_reported_though_no_job_is(archive: Engine) -> None:
    """Each of four jobs loses 4 of its 6 checkpoints: too few for any job to be a drain (fewer than 10),
    but the project lost 16 of the 24 it held, and that is one. The nights with no such loss skip the
    weighing, and this one must not."""
    fake = exact_org(1, 4, 6)
    project = fake.project_ids()[0]
    assert nightly(archive, fake, 0).exit_code == 0
    for job in fake.job_ids():
        path = f"/v1/training_projects/{project}/jobs/{job}/checkpoints"
        fake.override(
            "GET", path, body={"training_job": fake.job(job), "checkpoints": fake.checkpoints(job)[:2]}
        )
    report = nightly(archive, fake, 1, full=True)
    assert report.exit_code == 0, report.failures
    assert scalar(archive, LIVE_CHECKPOINTS) == 8
    assert [(d.scope, d.id, d.lost, d.held) for d in report.draining] == [("project", project, 16, 24)]
