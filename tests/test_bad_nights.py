"""One bad response overwrites nothing and "deletes" nothing: it fails its unit, by name, with exit 3."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.schema import training_jobs
from archiver.sync import SyncOptions, SyncReport

from .support.databases import rows, scalar
from .support.fakes import sync
from .support.times import stopped

NIGHTS = tuple(datetime(2026, 7, 1, 3, 0, tzinfo=UTC) + timedelta(days=n) for n in range(5))
HISTORY = ("training_project_history", "training_job_history", "checkpoint_history")


def org(**spec: Any) -> FakeBaseten:
    return FakeBaseten(
        OrgSpec(**{"seed": 21, "projects": 2, "jobs_per_project": 3, "checkpoints_per_job": 3, **spec})
    )


def nightly(engine: Engine, fake: FakeBaseten, n: int, **options: Any) -> SyncReport:
    return sync(engine, fake, SyncOptions(**options), clock=stopped(NIGHTS[n]))


def archive_state(engine: Engine) -> list[tuple[object, ...]]:
    """Every archived value that a bad night must leave alone, and how many versions there are."""
    return [
        *rows(engine, "SELECT id, name, deleted_at FROM training_projects ORDER BY id"),
        *rows(engine, "SELECT id, current_status, updated_at, deleted_at FROM training_jobs ORDER BY id"),
        *rows(
            engine,
            "SELECT training_job_id, checkpoint_id, size_bytes, created_at, checkpoint_type, deleted_at "
            "FROM checkpoints ORDER BY training_job_id, checkpoint_id",
        ),
        *[(table, scalar(engine, f"SELECT COUNT(*) FROM {table}")) for table in HISTORY],
    ]


def served_checkpoints(fake: FakeBaseten, job: str) -> dict[str, Any]:
    return {"training_job": fake.job(job), "checkpoints": fake.checkpoints(job)}


def checkpoints_path(fake: FakeBaseten, job: str) -> str:
    return f"/v1/training_projects/{fake.job(job)['training_project_id']}/jobs/{job}/checkpoints"


@pytest.mark.parametrize(
    ("breakage", "field"),
    [
        (lambda body: body["checkpoints"][0].update(size_bytes=None), "checkpoints[0].size_bytes"),
        (lambda body: body["checkpoints"][0].update(created_at=None), "checkpoints[0].created_at"),
        (lambda body: body["checkpoints"][0].update(checkpoint_type=None), "checkpoints[0].checkpoint_type"),
        (lambda body: body["training_job"].update(current_status=None), "training_job.current_status"),
        (lambda body: body["checkpoints"][0].pop("size_bytes"), "checkpoints[0].size_bytes"),
        (
            lambda body: body["checkpoints"][0].update(size_bytes=9007199254740993.0),
            "checkpoints[0].size_bytes",
        ),
        (lambda body: body["checkpoints"][0].update(size_bytes=1.5), "checkpoints[0].size_bytes"),
    ],
    ids=[
        "null-size",
        "null-created",
        "null-type",
        "null-status",
        "missing-size",
        "float-past-2^53",
        "fraction",
    ],
)
def test_a_broken_checkpoint_listing_fails_its_job_and_overwrites_nothing(
    archive: Engine, breakage: Callable[[dict[str, Any]], object], field: str
) -> None:
    fake = org()
    assert nightly(archive, fake, 0).exit_code == 0
    before = archive_state(archive)
    job = fake.job_ids()[0]
    body = served_checkpoints(fake, job)
    breakage(body)
    fake.override("GET", checkpoints_path(fake, job), body=body)
    report = nightly(archive, fake, 1, full=True)
    assert report.exit_code == 3
    (failure,) = report.failures
    assert (failure.job_id, failure.kind) == (job, "malformed") and repr(field) in failure.message
    assert archive_state(archive) == before
    assert rows(archive, "SELECT status FROM training_job_status_history WHERE status IS NULL") == []


def test_a_project_listing_with_a_nameless_project_fails_that_project_only(archive: Engine) -> None:
    fake = org()
    assert nightly(archive, fake, 0).exit_code == 0
    before = archive_state(archive)
    projects = [fake.project(p) for p in fake.project_ids()]
    projects[0]["name"] = None
    fake.override("GET", "/v1/training_projects", body={"training_projects": projects})
    report = nightly(archive, fake, 1, full=True)
    assert report.exit_code == 3
    assert any(f.message.startswith("field 'training_projects[0].name'") for f in report.failures)
    assert archive_state(archive) == before  # and the project it could not read is not "deleted"


def test_an_exact_float_is_the_integer_it_spells(archive: Engine) -> None:
    fake = org()
    job = fake.job_ids()[0]
    body = served_checkpoints(fake, job)
    body["checkpoints"][0].update(size_bytes=1.0e10, lora_adapter_config={"r": 16.0, "lora_alpha": 32})
    fake.override("GET", checkpoints_path(fake, job), body=body)
    assert nightly(archive, fake, 0).exit_code == 0
    assert rows(
        archive,
        "SELECT c.size_bytes, l.r FROM checkpoints c JOIN lora_adapter_configs l ON l.id = c.lora_adapter_config_id "
        "WHERE c.training_job_id = :j AND c.checkpoint_id = :c",
        j=job,
        c=body["checkpoints"][0]["checkpoint_id"],
    ) == [(10_000_000_000, 16)]


def test_an_empty_project_listing_deletes_nothing_unless_allowed_once(archive: Engine) -> None:
    fake = org()
    assert nightly(archive, fake, 0).exit_code == 0
    before = archive_state(archive)
    fake.override("GET", "/v1/training_projects", body={"training_projects": []})
    report = nightly(archive, fake, 1)
    assert report.exit_code == 3
    (failure,) = report.failures
    assert (
        failure.kind == "suspect" and "--allow-mass-delete" in failure.message and "empty" in failure.message
    )
    assert archive_state(archive) == before
    allowed = nightly(archive, fake, 2, allow_mass_delete=True)
    assert allowed.exit_code == 0
    assert scalar(archive, "SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NULL") == 0
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NULL") == 0
    fake.clear_overrides()  # the once was once: the next night brings them all back
    assert nightly(archive, fake, 3).exit_code == 0
    assert scalar(archive, "SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NULL") == len(
        fake.project_ids()
    )


def test_an_empty_job_listing_deletes_nothing(archive: Engine) -> None:
    fake = org()
    assert nightly(archive, fake, 0).exit_code == 0
    before = archive_state(archive)
    project = fake.project_ids()[0]
    fake.override(
        "GET",
        f"/v1/training_projects/{project}/jobs",
        body={"training_project": fake.project(project), "training_jobs": []},
    )
    report = nightly(archive, fake, 1)
    assert report.exit_code == 3
    assert [(f.project_id, f.kind) for f in report.failures] == [(project, "suspect")]
    assert archive_state(archive) == before


def test_a_listing_that_drops_more_than_half_of_ten_or_more_is_suspect(archive: Engine) -> None:
    fake = org(projects=1, jobs_per_project=1, checkpoints_per_job=20)
    job = fake.job_ids()[0]
    assert nightly(archive, fake, 0).exit_code == 0
    body = served_checkpoints(fake, job)
    kept, dropped = body["checkpoints"][:9], body["checkpoints"][9:]
    fake.override("GET", checkpoints_path(fake, job), body={**body, "checkpoints": kept})
    report = nightly(archive, fake, 1, full=True)
    assert report.exit_code == 3
    (failure,) = report.failures
    assert (
        failure.job_id == job
        and f"{len(dropped)} of {len(kept) + len(dropped)} live checkpoints" in failure.message
    )
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NULL") == 20
    # Still suspect the next night: a refused listing is read again, never skipped.
    assert nightly(archive, fake, 2).exit_code == 3
    # Fewer than half is an ordinary night.
    fake.override("GET", checkpoints_path(fake, job), body={**body, "checkpoints": body["checkpoints"][:12]})
    assert nightly(archive, fake, 3, full=True).exit_code == 0
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NULL") == 12


@pytest.mark.parametrize(
    "marker",
    [
        {"next_page_token": 1, "total_count": 3},
        {"next_cursor": "abc"},
        {"has_more": True},
        {"total_count": 3},
    ],
    ids=["token", "cursor", "has_more", "total_count"],
)
def test_a_checkpoint_listing_that_says_there_is_more_marks_nothing_deleted(
    archive: Engine, marker: dict[str, Any]
) -> None:
    fake = org()
    job = next(j for j in fake.job_ids() if len(fake.checkpoints(j)) == 3)
    assert nightly(archive, fake, 0).exit_code == 0
    body = served_checkpoints(fake, job)
    fake.override(
        "GET", checkpoints_path(fake, job), body={**body, "checkpoints": body["checkpoints"][:1], **marker}
    )
    report = nightly(archive, fake, 1, full=True)
    assert report.exit_code == 3
    (failure,) = report.failures
    assert failure.job_id == job and "says there is more" in failure.message
    assert (
        scalar(
            archive,
            "SELECT COUNT(*) FROM checkpoints WHERE training_job_id = :j AND deleted_at IS NULL",
            j=job,
        )
        == 3
    )


def test_a_project_or_job_listing_that_says_there_is_more_marks_nothing_deleted(archive: Engine) -> None:
    fake = org()
    assert nightly(archive, fake, 0).exit_code == 0
    before = archive_state(archive)
    projects = [fake.project(p) for p in fake.project_ids()]
    fake.override(
        "GET", "/v1/training_projects", body={"training_projects": projects[:1], "next": "/v1/x?page=2"}
    )
    project = projects[0]["id"]
    jobs = [fake.job(j) for j in fake.job_ids(project)]
    listing = {"training_project": projects[0], "training_jobs": jobs[:1], "next_page_token": "2"}
    fake.override("GET", f"/v1/training_projects/{project}/jobs", body=listing)
    report = nightly(archive, fake, 1)
    assert report.exit_code == 3
    assert {f.project_id for f in report.failures} == {None, project}
    assert all("says there is more" in f.message for f in report.failures)
    assert archive_state(archive) == before


def test_what_the_api_adds_is_kept(archive: Engine) -> None:
    fake = org()
    job = fake.job_ids()[0]
    body = served_checkpoints(fake, job)
    body["retention_policy"] = {"days": 30}
    body["training_job"]["training_project"]["owner"] = "ml-platform"
    fake.override("GET", checkpoints_path(fake, job), body=body)
    assert nightly(archive, fake, 0).exit_code == 0
    with archive.connect() as connection:
        extra = connection.scalar(sa.select(training_jobs.c.extra).where(training_jobs.c.id == job))
    assert extra is not None and extra["training_project"]["owner"] == "ml-platform"
    (stored,) = rows(
        archive,
        "SELECT b.body FROM api_responses r JOIN api_response_bodies b ON b.id = r.body_id WHERE r.path = :p",
        p=checkpoints_path(fake, job),
    )
    body_bytes = stored[0]
    assert isinstance(body_bytes, bytes | memoryview)
    assert json.loads(zlib.decompress(bytes(body_bytes)))["retention_policy"] == {"days": 30}


def test_a_job_that_comes_back_while_its_read_fails_is_read_again(archive: Engine) -> None:
    fake = org()
    assert nightly(archive, fake, 0).exit_code == 0
    job = next(
        j
        for j in fake.job_ids()
        if fake.checkpoints(j) and fake.job(j)["current_status"].endswith("COMPLETED")
    )
    project = fake.job(job)["training_project_id"]
    listing = f"/v1/training_projects/{project}/jobs"
    others = {
        "training_project": fake.project(project),
        "training_jobs": [fake.job(j) for j in fake.job_ids(project) if j != job],
    }
    fake.override("GET", listing, body=others)
    assert (
        nightly(archive, fake, 1, recheck_after=None).exit_code == 0
    )  # gone: marked deleted, with its checkpoints
    fake.clear_overrides()
    fake.override("GET", checkpoints_path(fake, job), status=503, body={"message": "unavailable"})
    assert (
        nightly(archive, fake, 2, recheck_after=None).exit_code == 3
    )  # listed again, but its checkpoints cannot be read
    fake.clear_overrides()
    assert nightly(archive, fake, 3, recheck_after=None).exit_code == 0
    live = scalar(
        archive, "SELECT COUNT(*) FROM checkpoints WHERE training_job_id = :j AND deleted_at IS NULL", j=job
    )
    assert live == len(fake.checkpoints(job)) > 0


def test_a_job_that_finishes_with_one_more_checkpoint_and_the_same_updated_at_is_read(
    archive: Engine,
) -> None:
    fake = org(active_fraction=0.5, syncing_fraction=0.0)
    job = next(j for j in fake.job_ids() if fake.job(j)["current_status"] == "TRAINING_JOB_RUNNING")
    fake.set_job(job, checkpoint_sync_status="COMPLETED")
    assert nightly(archive, fake, 0).exit_code == 0
    updated_at = fake.job(job)["updated_at"]
    added = fake.add_checkpoint(job, sync_status="COMPLETE")
    fake.set_job(job, current_status="TRAINING_JOB_COMPLETED", updated_at=updated_at)
    assert nightly(archive, fake, 1, recheck_after=None).exit_code == 0
    assert rows(
        archive,
        "SELECT checkpoint_id FROM checkpoints WHERE training_job_id = :j AND checkpoint_id = :c",
        j=job,
        c=added["checkpoint_id"],
    ) == [(added["checkpoint_id"],)]


def test_every_skipped_job_is_read_again_within_recheck_after_spread_over_the_nights(archive: Engine) -> None:
    fake = org(projects=4, jobs_per_project=25, checkpoints_per_job=1, active_fraction=0.0)
    jobs = len(fake.job_ids())
    start = datetime(2026, 8, 1, 3, 0, tzinfo=UTC)
    assert sync(archive, fake, SyncOptions(), clock=lambda: start).counts.jobs_fetched == jobs
    week = timedelta(days=7)
    fetched = []
    for day in range(1, 15):
        report = sync(
            archive, fake, SyncOptions(recheck_after=week), clock=stopped(start + timedelta(days=day))
        )
        fetched.append(report.counts.jobs_fetched)
    share = jobs / 7
    assert sum(fetched[:7]) >= jobs and sum(fetched[7:]) >= jobs  # each job at least once a week
    assert max(fetched) <= 2 * share, fetched  # and no night takes much more than its share
    last_read = rows(archive, "SELECT MIN(checkpoints_fetched_at) FROM training_jobs")[0][0]
    assert last_read is not None
