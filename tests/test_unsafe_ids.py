"""Ids that cannot round-trip in a URL path (`.`, `..`, a `/` even encoded) fail their entry by name:
never requested at another URL, never marked deleted.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec, serve

from .support.commands import run_archiver, sync_env
from .support.databases import rows

UNSAFE_JOBS = (".", "..", "a/b", "%2F", "%2e%2e")


@pytest.fixture
def fake() -> FakeBaseten:
    return FakeBaseten(OrgSpec(seed=9, projects=2, jobs_per_project=2, checkpoints_per_job=2))


def serve_unsafe_ids(fake: FakeBaseten) -> str:
    """List jobs with unsafe ids in the first project, and a project `..` beside the others; return the project."""
    project = fake.project_ids()[0]
    listed = [fake.job(j) for j in fake.job_ids(project)]
    unsafe = [{**listed[0], "id": job_id} for job_id in UNSAFE_JOBS]
    body = {"training_project": fake.project(project), "training_jobs": [*listed, *unsafe]}
    fake.override("GET", f"/v1/training_projects/{project}/jobs", body=body)
    projects = [fake.project(p) for p in fake.project_ids()]
    fake.override(
        "GET", "/v1/training_projects", body={"training_projects": [*projects, {**projects[0], "id": ".."}]}
    )
    return project


def test_unsafe_ids_fail_by_name_and_are_never_requested_nor_deleted(
    fake: FakeBaseten, database_url: str, engine: Engine
) -> None:
    project = serve_unsafe_ids(fake)
    with serve(fake) as url:
        for night in range(2):
            fake.reset_metrics()
            result = run_archiver("sync", "--full", env=sync_env(url, database_url))
            assert result.exit_code == 3, result.output
            for job_id in UNSAFE_JOBS:
                assert f"job {job_id}: the job id {job_id!r} cannot be requested" in result.stderr, (
                    result.stderr
                )
            assert "project ..: the project id '..' cannot be requested" in result.stderr
            assert "0 marked deleted" in result.stdout and "gone" not in result.stdout, (night, result.stdout)
            requested = {record.path for record in fake.requests}
            # Only the real listings: no URL that a dot segment or a decoded slash would reach.
            expected = {"/v1/training_projects"}
            expected |= {f"/v1/training_projects/{p}/jobs" for p in fake.project_ids()}
            expected |= {
                f"/v1/training_projects/{fake.job(j)['training_project_id']}/jobs/{j}/checkpoints"
                for j in fake.job_ids()
            }
            assert requested == expected, requested - expected
    archived = rows(
        engine,
        "SELECT id, deleted_at FROM training_jobs WHERE training_project_id = :p ORDER BY id",
        p=project,
    )
    assert {job_id for job_id, _ in archived} == {*UNSAFE_JOBS, *fake.job_ids(project)}
    assert all(deleted is None for _, deleted in archived)
    assert rows(engine, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NOT NULL") == [(0,)]
    assert rows(engine, "SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NOT NULL") == [(0,)]
