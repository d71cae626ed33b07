"""`run_sync` in-process against the fake API: listings read as sent, and interruptions."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.client import RetryPolicy
from archiver.errors import Interrupted
from archiver.fake_api import Response
from archiver.sync import SyncOptions, run_sync

from .support import fakes
from .support.databases import rows


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

    def hold_the_last(method: str, path: str, body: bytes) -> Response | None:
        if path == f"/v1/training_projects/{last}/jobs":
            deadline = time.monotonic() + 10
            while not (found := _jobs_of(archive, first)) and time.monotonic() < deadline:
                time.sleep(0.02)
            seen_first.append(bool(found))
        return None

    fake.intercept(hold_the_last)
    report = fakes.sync(archive, fake)
    assert report.exit_code == 0 and report.counts.projects == 3
    assert seen_first == [True]
    assert sorted(rows(archive, "SELECT id FROM training_jobs")) == sorted((j,) for j in fake.job_ids())


def _jobs_of(archive: Engine, project_id: str) -> int:
    with archive.connect() as connection:
        query = sa.text("SELECT count(*) FROM training_jobs WHERE training_project_id = :p")
        return int(connection.execute(query, {"p": project_id}).scalar_one())
