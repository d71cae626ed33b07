"""One night, one answer: the archive a run leaves does not depend on the order its responses complete in,
nor on --concurrency, and `archiver rebuild` reproduces it (issue 17, item 4)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver import db
from archiver.fake_api import FakeBaseten, OrgSpec, Response
from archiver.rebuild import rebuild
from archiver.sync import SyncOptions

from .support.archive_dump import dump
from .support.databases import rows
from .support.fakes import sync
from .support.times import stopped

NIGHTS = tuple(datetime(2026, 9, 1, 3, 0, tzinfo=UTC) + timedelta(days=n) for n in range(3))


def organisation() -> FakeBaseten:
    return FakeBaseten(
        OrgSpec(seed=5, projects=3, jobs_per_project=3, checkpoints_per_job=4, active_fraction=0.0)
    )


def shared_type(fake: FakeBaseten) -> tuple[str, str, str]:
    """Two jobs that ran on one instance type: (type id, one job, the other)."""
    by_type: dict[str, list[str]] = {}
    for job in fake.job_ids():
        by_type.setdefault(fake.job(job)["instance_type"]["id"], []).append(job)
    type_id, (first, second, *_) = next((t, jobs) for t, jobs in sorted(by_type.items()) if len(jobs) > 1)
    return type_id, first, second


def change_the_night(fake: FakeBaseten, delays: random.Random) -> tuple[str, str, str]:
    """Night 1: a job moves to another project, and one instance type is described two ways; every answer
    comes after a random delay. Return the moved job, its new project and the doubly described type."""
    source, target, _ = fake.project_ids()
    moved_job = fake.job_ids(source)[0]
    moved = {**fake.job(moved_job), "training_project_id": target}
    type_id, _, odd_job = shared_type(fake)
    odd = fake.job(odd_job)
    odd["instance_type"] = {
        **odd["instance_type"],
        "memory_limit_mib": odd["instance_type"]["memory_limit_mib"] + 1,
    }
    lock_free_delays = [delays.uniform(0, 0.02) for _ in range(200)]

    def hook(_method: str, path: str, _body: bytes) -> Response | None:
        time.sleep(lock_free_delays[hash(path) % len(lock_free_delays)])
        if path == f"/v1/training_projects/{source}/jobs":
            jobs = [fake.job(j) for j in fake.job_ids(source) if j != moved_job]
            return Response.of(200, {"training_project": fake.project(source), "training_jobs": jobs})
        if path == f"/v1/training_projects/{target}/jobs":
            jobs = [fake.job(j) for j in fake.job_ids(target)] + [moved]
            return Response.of(200, {"training_project": fake.project(target), "training_jobs": jobs})
        if path == f"/v1/training_projects/{target}/jobs/{moved_job}/checkpoints":
            return Response.of(200, {"training_job": moved, "checkpoints": fake.checkpoints(moved_job)})
        if path == f"/v1/training_projects/{odd['training_project_id']}/jobs/{odd_job}/checkpoints":
            return Response.of(200, {"training_job": odd, "checkpoints": fake.checkpoints(odd_job)[1:]})
        return None

    fake.intercept(hook)
    return moved_job, target, type_id


def play(url: str, concurrency: int, seed: int) -> tuple[str, str, str]:
    fake = organisation()
    engine = db.make_engine(url)
    try:
        options: dict[str, Any] = {"concurrency": concurrency, "full": True}
        assert sync(engine, fake, SyncOptions(**options), clock=stopped(NIGHTS[0])).exit_code == 0
        changed = change_the_night(fake, random.Random(seed))
        report = sync(engine, fake, SyncOptions(**options), clock=stopped(NIGHTS[1]))
        assert report.exit_code == 0, report.failures
        fake.clear_overrides()
        assert sync(engine, fake, SyncOptions(**options), clock=stopped(NIGHTS[2])).exit_code in (0, 3)
        return changed
    finally:
        engine.dispose()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)))
def test_the_same_nights_at_concurrency_1_and_8_leave_the_same_archive(
    new_database: Callable[[], str], seeds: tuple[int, int]
) -> None:
    one, eight, rebuilt = new_database(), new_database(), new_database()
    moved_job, target, type_id = play(one, 1, seeds[0])
    play(eight, 8, seeds[1])
    engines = [db.make_engine(url) for url in (one, eight)]
    try:
        assert dump(engines[0], times=True) == dump(engines[1], times=True)
        history = "SELECT training_project_id FROM training_job_history WHERE id = :job ORDER BY valid_from"
        # It moved on night 1, a version and never a deletion, and back on night 2.
        assert rows(engines[0], history, job=moved_job)[1:] == [(target,)]
        deleted = (
            "SELECT COUNT(*) FROM checkpoint_history WHERE training_job_id = :job AND deleted_at IS NOT NULL"
        )
        assert rows(engines[0], deleted, job=moved_job) == [(0,)]
        # Night 1 described the type two ways (one job's answer a MiB apart): both are versions.
        memory = "SELECT memory_limit_mib FROM instance_type_versions WHERE id = :t ORDER BY valid_from"
        described = [int(str(m)) for (m,) in rows(engines[0], memory, t=type_id)]
        assert len(described) == 3 and described[0] == described[1] - 1, described
        rebuild(one, rebuilt)
        again = db.make_engine(rebuilt)
        try:
            assert dump(again, times=True) == dump(engines[0], times=True)
        finally:
            again.dispose()
    finally:
        for engine in engines:
            engine.dispose()
