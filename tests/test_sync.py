"""`run_sync` in-process against the fake API: listings read as sent, and interruptions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.client import RetryPolicy
from archiver.errors import Interrupted
from archiver.fake_api import FakeBaseten, OrgSpec, Response
from archiver.sync import SyncOptions, run_sync

from .support import fakes
from .support.databases import rows

T = TypeVar("T")


def test_a_job_listed_twice_is_fetched_and_counted_once(archive: Engine) -> None:
    fake = fakes.small_org()
    (project_id,) = fake.project_ids()
    (job_id,) = fake.job_ids()
    listing = {"training_project": fake.project(project_id), "training_jobs": [fake.job(job_id)] * 2}
    fake.override("GET", f"/v1/training_projects/{project_id}/jobs", body=listing)
    report = fakes.sync(archive, fake)
    assert report.exit_code == 0
    assert (report.counts.jobs, report.counts.jobs_fetched, report.counts.checkpoints_inserted) == (1, 1, 1)


def test_a_signal_during_the_project_listing_is_an_interruption_not_an_outage(archive: Engine) -> None:
    fake = fakes.small_org()
    options = SyncOptions()
    # Retries allowed, so that only the stop can end the listing's attempts.
    with fakes.client_for(fake, retry=RetryPolicy()) as client:

        def interrupt(method: str, path: str, body: bytes) -> Response:
            options.stop.set()  # what the CLI's signal handler does
            client.stop()
            return Response.of(503, b"busy", content_type="text/plain")

        fake.intercept(interrupt)
        with pytest.raises(Interrupted):
            run_sync(archive, client, options)
    assert rows(archive, "SELECT status FROM sync_runs") == [("interrupted",)]
    assert fake.request_count() == 1


def test_each_job_listing_is_written_once_those_before_it_are_in_not_after_the_last(archive: Engine) -> None:
    """Listings are written in the order of their project ids whatever order they come in, and each as
    soon as those before it are in: the first project's jobs are in the archive while the last
    project's listing is still on its way, so the writes do not wait for the slowest answer."""
    fake = fakes.small_org(projects=3)
    first, *_, last = sorted(fake.project_ids())
    seen_first: list[bool] = []
    path = f"/v1/training_projects/{last}/jobs"
    fake.intercept(_held_until(path, lambda: bool(_jobs_of(archive, first)), seen_first, 10))
    report = fakes.sync(archive, fake)
    assert report.exit_code == 0 and report.counts.projects == 3
    assert seen_first == [True]
    assert sorted(rows(archive, "SELECT id FROM training_jobs")) == sorted((j,) for j in fake.job_ids())


def _held_until(
    path: str, found: Callable[[], T], seen: list[T], within_s: float
) -> Callable[[str, str, bytes], Response | None]:
    """An interception that holds the request for `path` until `found()` holds (at most `within_s`),
    then lets it through, noting in `seen` what it found."""

    def hold(method: str, asked: str, body: bytes) -> Response | None:
        if asked == path:
            deadline = time.monotonic() + within_s
            while not (what := found()) and time.monotonic() < deadline:
                time.sleep(0.02)
            seen.append(what)
        return None

    return hold


def _jobs_of(archive: Engine, project_id: str) -> int:
    with archive.connect() as connection:
        query = sa.text("SELECT count(*) FROM training_jobs WHERE training_project_id = :p")
        return int(connection.execute(query, {"p": project_id}).scalar_one())


def test_jobs_read_while_the_writer_would_wait_are_written_before_the_batch_fills(archive: Engine) -> None:
    """While no answer is waiting, what has been read is written, not held until the batch is full or
    the last answer is in: with one job's checkpoints still on their way, the others are archived."""
    fake = FakeBaseten(OrgSpec(projects=0))
    fake.add_project(jobs=4, checkpoints_per_job=2)
    (project,) = fake.project_ids()
    held, *others = fake.job_ids()
    seen_others: list[int] = []
    path = f"/v1/training_projects/{project}/jobs/{held}/checkpoints"
    fake.intercept(_held_until(path, lambda: _checkpoints_of(archive, others), seen_others, 5))
    # A batch of 24 rows would hold all four jobs (3 rows each): it is written early from 3.
    report = fakes.sync(archive, fake, SyncOptions(batch_rows=24))
    assert report.exit_code == 0 and report.counts.jobs_fetched == 4
    assert len(seen_others) == 1 and seen_others[0] >= 2  # at least one other job's two checkpoints
    assert rows(archive, "SELECT count(*) FROM checkpoints") == [(8,)]


def _checkpoints_of(archive: Engine, jobs: list[str]) -> int:
    with archive.connect() as connection:
        query = sa.text("SELECT count(*) FROM checkpoints WHERE training_job_id IN :jobs")
        query = query.bindparams(sa.bindparam("jobs", expanding=True))
        return int(connection.execute(query, {"jobs": jobs}).scalar_one())
