"""Defects found in review, each pinned by the test that showed it."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from archiver import db
from archiver.cli import cli
from archiver.cli import sync as sync_command
from archiver.client import BasetenClient, RetryPolicy
from archiver.errors import Interrupted
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, OrgSpec, serve
from archiver.sync import Scope, SyncOptions, SyncReport, run_sync

from .conftest import archiver_command, rows
from .test_normalize import CHECKPOINTS, JOB


class Org:
    """A small organisation served through httpx.MockTransport, editable between runs."""

    def __init__(self) -> None:
        self.projects: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, list[dict[str, Any]]] = {}
        self.checkpoints: dict[str, list[dict[str, Any]]] = {}
        # Replace a project's job-listing body (project id -> body).
        self.listing_override: dict[str, Any] = {}

    def add(self, pid: str, jid: str, **job_fields: Any) -> dict[str, Any]:
        project = self.projects.setdefault(
            pid,
            {
                "id": pid,
                "name": f"project {pid}",
                "created_at": "2026-05-02T09:14:07Z",
                "updated_at": "2026-05-02T09:14:07Z",
                "latest_job": None,
            },
        )
        job = {
            **copy.deepcopy(JOB),
            "id": jid,
            "training_project_id": pid,
            "training_project": {"id": pid, "name": project["name"]},
            **job_fields,
        }
        self.jobs.setdefault(pid, []).append(job)
        self.checkpoints[jid] = [
            {**copy.deepcopy(CHECKPOINTS[0]), "training_job_id": jid, "checkpoint_id": f"{jid}-1"}
        ]
        return job

    def job(self, jid: str) -> dict[str, Any]:
        return next(job for jobs in self.jobs.values() for job in jobs if job["id"] == jid)

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            parts = [part for part in request.url.path.split("/") if part]
            match parts:
                case ["v1", "training_projects"]:
                    body: Any = {"training_projects": list(self.projects.values())}
                case ["v1", "training_projects", pid, "jobs"] if pid in self.projects:
                    body = self.listing_override.get(pid) or {
                        "training_project": self.projects[pid],
                        "training_jobs": self.jobs.get(pid, []),
                    }
                case ["v1", "training_projects", pid, "jobs", jid, "checkpoints"] if jid in self.checkpoints:
                    body = {"training_job": self.job(jid), "checkpoints": self.checkpoints[jid]}
                case _:
                    return httpx.Response(404, json={"message": "not found"})
            return httpx.Response(200, content=json.dumps(body).encode())

        return httpx.MockTransport(handler)

    def sync(self, engine: Engine, **options: Any) -> SyncReport:
        retry = RetryPolicy(attempts=1)
        with BasetenClient(
            "k", "https://api.test", max_rps=1000, retry=retry, transport=self.transport()
        ) as client:
            return run_sync(engine, client, SyncOptions(**options))


def live_checkpoints(engine: Engine, jid: str) -> int:
    return len(
        rows(
            engine,
            "SELECT checkpoint_id FROM checkpoints WHERE training_job_id = :j AND deleted_at IS NULL",
            j=jid,
        )
    )


# ------------------------------------------------------------------------------------------------
# deletion marking


def test_a_job_listing_naming_another_project_fails_that_project_and_marks_nothing(
    archive: Engine,
) -> None:
    """A project's job listing whose `training_project` is another project must not be archived
    as that other project: it used to mark every job of the other project deleted (outside the
    run's scope), or fail the whole run on a foreign key."""
    org = Org()
    org.add("aaaaaaa", "jobaaaa")
    org.add("bbbbbbb", "jobbbbb")
    assert org.sync(archive).exit_code == 0

    org.listing_override["aaaaaaa"] = {
        "training_project": org.projects["bbbbbbb"],
        "training_jobs": org.jobs["aaaaaaa"],
    }
    report = org.sync(archive, scope=Scope(project_ids=("aaaaaaa",)))

    assert report.exit_code == 3
    (failure,) = report.failures
    assert failure.project_id == "aaaaaaa" and "training_project" in failure.message
    assert rows(archive, "SELECT id FROM training_jobs WHERE deleted_at IS NOT NULL") == []
    assert live_checkpoints(archive, "jobbbbb") == 1
    assert rows(archive, "SELECT name FROM training_projects WHERE id = 'bbbbbbb'") == [("project bbbbbbb",)]


def test_a_new_project_whose_listing_names_another_project_is_a_partial_run_not_a_fatal_one(
    archive: Engine,
) -> None:
    org = Org()
    org.add("bbbbbbb", "jobbbbb")
    assert org.sync(archive).exit_code == 0
    org.add("aaaaaaa", "jobaaaa")
    org.listing_override["aaaaaaa"] = {
        "training_project": org.projects["bbbbbbb"],
        "training_jobs": org.jobs["aaaaaaa"],
    }
    report = org.sync(archive)
    assert report.exit_code == 3
    assert [f.project_id for f in report.failures] == ["aaaaaaa"]


# ------------------------------------------------------------------------------------------------
# incremental sync


def test_a_finished_job_whose_uploader_is_still_syncing_is_read_again(archive: Engine) -> None:
    """A terminal job read while its uploader said SYNCING and no checkpoint was listed yet was
    skipped on every later night: the checkpoints that then appeared never reached the archive."""
    org = Org()
    org.add("aaaaaaa", "jobaaaa", checkpoint_sync_status="SYNCING")
    uploaded = org.checkpoints["jobaaaa"]
    org.checkpoints["jobaaaa"] = []
    assert org.sync(archive).exit_code == 0

    org.job("jobaaaa")["checkpoint_sync_status"] = "COMPLETED"  # updated_at does not move
    org.checkpoints["jobaaaa"] = uploaded
    report = org.sync(archive)

    assert report.counts.jobs_skipped == 0 and report.counts.checkpoints_inserted == 1
    assert live_checkpoints(archive, "jobaaaa") == 1


def test_a_finished_job_whose_uploader_is_still_syncing_is_not_skipped_with_complete_checkpoints(
    archive: Engine,
) -> None:
    org = Org()
    org.add("aaaaaaa", "jobaaaa", checkpoint_sync_status="SYNCING")
    assert org.sync(archive).exit_code == 0
    later = {**copy.deepcopy(CHECKPOINTS[0]), "training_job_id": "jobaaaa", "checkpoint_id": "late"}
    org.checkpoints["jobaaaa"].append(later)
    report = org.sync(archive)
    assert report.counts.jobs_skipped == 0 and report.counts.checkpoints_inserted == 1


# ------------------------------------------------------------------------------------------------
# docs


def test_the_readme_states_the_defaults_sync_really_has() -> None:
    """The README's fault table said requests are paced under `--max-rps` default 50; it is 95."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    defaults = {option: param.default for param in sync_command.params for option in param.opts}
    stated = re.findall(r"`(--[a-z-]+)`[^`|()]{0,30}\((?:default )?(\d+(?:\.\d+)?)[,;)]", readme)
    assert len(stated) >= 4
    for option, value in stated:
        assert float(value) == float(defaults[option]), f"README says {option} defaults to {value}"


# ------------------------------------------------------------------------------------------------
# demo


def test_the_demo_never_writes_into_the_archive_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ARCHIVER_DATABASE_URL set (as the README's cron setup does), `archiver demo` wrote its
    fake organisation into the real archive, where the next sync marked it all deleted, for good."""
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "real-archive.db"
    result = CliRunner().invoke(cli, ["demo"], env={"ARCHIVER_DATABASE_URL": f"sqlite:///{real}"})
    assert result.exit_code == 0, result.output
    assert not real.exists()
    assert (tmp_path / "archiver-demo.db").exists()


# ------------------------------------------------------------------------------------------------
# reports


@pytest.mark.parametrize("since", ["99999999w", "9999999999999d", "0001-01-01T00:00:00+01:00"])
def test_a_since_too_far_back_is_a_usage_error_not_a_traceback(tmp_path: Path, since: str) -> None:
    result = CliRunner().invoke(
        cli, ["report", "jobs", "--since", since, "--database-url", f"sqlite:///{tmp_path / 'a.db'}"]
    )
    assert not isinstance(result.exception, OverflowError), result.exception
    assert result.exit_code == 2 and "--since" in result.output


# ------------------------------------------------------------------------------------------------
# signals


@pytest.mark.slow
def test_a_second_signal_stops_at_once_with_status_130(database_url: str, engine: Engine) -> None:
    """README: 130 for SIGINT/SIGTERM, and a second signal stops at once. The second signal used to
    end in Click's 'Aborted!' with exit status 1, which cron wrappers read as a fatal failure."""
    fake = FakeBaseten(OrgSpec(seed=5, projects=3, jobs_per_project=2), latency_ms=1500)
    with serve(fake) as url:
        process = subprocess.Popen(
            [*archiver_command(), "sync", "--concurrency", "2"],
            env={
                **os.environ,
                "BASETEN_API_URL": url,
                "BASETEN_API_KEY": DEFAULT_API_KEY,
                "ARCHIVER_DATABASE_URL": database_url,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 60
        while fake.request_count() < 1:  # the project list is in: job listings are in flight
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr
    assert rows(engine, "SELECT status FROM sync_runs") == [("interrupted",)]


# ------------------------------------------------------------------------------------------------
# secrets


def test_a_password_in_the_url_query_string_is_masked_too(tmp_path: Path) -> None:
    """libpq takes `?password=...` as well as `user:password@`; the first was printed as is."""
    url = "postgresql://archiver@127.0.0.1:1/archive?sslmode=disable&password=s3cretpw"
    for args in (["query", "SELECT 1"], ["runs"], ["db", "current"]):
        result = CliRunner().invoke(cli, [*args, "--database-url", url])
        assert result.exit_code == 1, result.output
        assert "127.0.0.1" in result.output and "s3cretpw" not in result.output
    assert "s3cretpw" not in db.redact(url) and "sslmode=disable" in db.redact(url)


# ------------------------------------------------------------------------------------------------
# views


def test_job_facts_latest_checkpoint_is_the_same_on_both_databases_when_a_created_at_is_null(
    archive: Engine,
) -> None:
    """An archive written before the API contract was enforced may hold `created_at` null. NULL sorts
    first in ORDER BY ... DESC on PostgreSQL but last on SQLite; `job_facts` puts undated checkpoints
    last on both, so the same archive names the same latest checkpoint."""
    org = Org()
    org.add("aaaaaaa", "jobaaaa")
    undated = {**copy.deepcopy(CHECKPOINTS[1]), "training_job_id": "jobaaaa"}
    org.checkpoints["jobaaaa"].append(undated)
    assert org.sync(archive).exit_code == 0
    with archive.begin() as connection:  # a null the API can no longer bring in
        connection.exec_driver_sql(
            "UPDATE checkpoints SET created_at = NULL WHERE checkpoint_id = 'checkpoint-1000'"
        )
    assert rows(archive, "SELECT latest_checkpoint_id FROM job_facts") == [("jobaaaa-1",)]


# ------------------------------------------------------------------------------------------------
# scope and listings


def test_a_job_listed_twice_is_fetched_and_counted_once(archive: Engine) -> None:
    org = Org()
    job = org.add("aaaaaaa", "jobaaaa")
    org.jobs["aaaaaaa"].append(copy.deepcopy(job))
    report = org.sync(archive)
    assert report.exit_code == 0
    assert (report.counts.jobs, report.counts.jobs_fetched, report.counts.checkpoints_inserted) == (1, 1, 1)


def test_a_mistyped_project_is_an_error_not_a_deletion(archive: Engine) -> None:
    org = Org()
    org.add("aaaaaaa", "jobaaaa")
    assert org.sync(archive).exit_code == 0
    report = org.sync(archive, scope=Scope(project_ids=("aaaaaab",)))
    assert report.exit_code == 3
    assert [(f.project_id, f.kind) for f in report.failures] == [("aaaaaab", "error")]
    assert "no such project" in str(report.failures[0])
    assert rows(archive, "SELECT COUNT(*) FROM training_projects WHERE deleted_at IS NOT NULL") == [(0,)]


def test_a_signal_during_the_project_listing_is_an_interruption_not_an_outage(archive: Engine) -> None:
    options = SyncOptions()
    clients: list[BasetenClient] = []

    def handler(request: httpx.Request) -> httpx.Response:
        options.stop.set()  # what the CLI's signal handler does
        clients[0].stop()
        return httpx.Response(503, text="busy")

    with BasetenClient("k", "https://api.test", transport=httpx.MockTransport(handler)) as client:
        clients.append(client)
        with pytest.raises(Interrupted):
            run_sync(archive, client, options)
    assert rows(archive, "SELECT status FROM sync_runs") == [("interrupted",)]
