"""`run_sync` in-process against the fake API: listings read as sent, and interruptions."""

from __future__ import annotations

import pytest
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
