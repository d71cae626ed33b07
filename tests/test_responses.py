"""Every response a run acted on is kept: once per distinct body, compressed, without secrets."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.sync import SyncOptions

from .support.databases import rows, scalar
from .support.fakes import sync

NIGHT = datetime(2026, 10, 1, 3, 0, tzinfo=UTC)
KEY = "sk-live-9d2c-never-keep-me"


def kept(engine: Engine, run_id: int | None) -> list[tuple[object, ...]]:
    return rows(
        engine,
        "SELECT r.method, r.path, r.status, b.size_bytes, b.body FROM api_responses r "
        "JOIN api_response_bodies b ON b.id = r.body_id WHERE r.sync_run_id = :r ORDER BY r.path",
        r=run_id,
    )


def bodies_of(engine: Engine, run_id: int | None) -> list[tuple[int, bytes]]:
    """Each kept body of a run: its size as received and its stored (compressed) bytes."""
    found = []
    for *_, size, body in kept(engine, run_id):
        assert isinstance(size, int) and isinstance(body, bytes | memoryview)
        found.append((size, bytes(body)))
    return found


def test_each_response_is_kept_with_its_run_path_and_status(archive: Engine) -> None:
    fake = FakeBaseten(OrgSpec(seed=4, projects=2, jobs_per_project=2, checkpoints_per_job=2))
    report = sync(archive, fake, clock=lambda: NIGHT)
    assert report.exit_code == 0
    responses = kept(archive, report.run_id)
    assert len(responses) == report.counts.requests == fake.request_count()
    assert {(method, path) for method, path, *_ in responses} == {(r.method, r.path) for r in fake.requests}
    assert {status for _, _, status, _, _ in responses} == {200}
    for size, body in bodies_of(archive, report.run_id):
        assert len(zlib.decompress(body)) == size > len(body)  # the body as received, compressed


def test_an_unchanged_night_stores_no_new_bodies(archive: Engine) -> None:
    fake = FakeBaseten(
        OrgSpec(seed=4, projects=3, jobs_per_project=3, checkpoints_per_job=5, active_fraction=0.0)
    )
    sync(archive, fake, clock=lambda: NIGHT)
    bodies = scalar(archive, "SELECT COUNT(*) FROM api_response_bodies")
    stored = scalar(archive, "SELECT SUM(LENGTH(body)) FROM api_response_bodies")
    second = sync(archive, fake, SyncOptions(full=True), clock=lambda: NIGHT + timedelta(days=1))
    assert second.exit_code == 0
    assert scalar(archive, "SELECT COUNT(*) FROM api_response_bodies") == bodies
    assert scalar(archive, "SELECT SUM(LENGTH(body)) FROM api_response_bodies") == stored
    assert len(kept(archive, second.run_id)) == second.counts.requests  # a row per request, nothing more


def test_a_key_echoed_by_the_api_is_never_kept(archive: Engine) -> None:
    fake = FakeBaseten(OrgSpec(seed=4, projects=1, jobs_per_project=1, checkpoints_per_job=1), api_key=KEY)
    project = fake.project(fake.project_ids()[0])
    project["description"] = f"made with key {KEY}"
    fake.override("GET", "/v1/training_projects", body={"training_projects": [project]})
    report = sync(archive, fake, key=KEY, clock=lambda: NIGHT)
    assert report.exit_code == 0
    bodies = [zlib.decompress(body) for _, body in bodies_of(archive, report.run_id)]
    assert any(b"made with key <api key>" in body for body in bodies)
    assert not any(KEY.encode() in body for body in bodies)
