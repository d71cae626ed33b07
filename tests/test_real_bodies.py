"""What Baseten really sends: bodies written by its own engineers, replayed as the endpoints return them.

`data/real-shaped/` holds the mocks of the baseten-cli and truss test suites, docs.baseten.co's examples and
a job captured from a real run (see its README). Each body is served by the fake API at the endpoint it
answers (a lone job wrapped into its project's job listing, as that endpoint returns it), synced on both
databases, and what landed is checked row by row: every entry is archived as sent, or quarantined by name
in `rejected_entries`, and nothing else.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.schema import checkpoints, rejected_entries, training_jobs, training_projects
from archiver.sync import Scope, SyncOptions, SyncReport
from archiver.views import job_facts

from .support import fakes

REAL = Path(__file__).resolve().parent / "data" / "real-shaped"


def body(name: str) -> Any:
    return json.loads((REAL / name).read_text())


def select(engine: Engine, table: sa.Table | sa.TableClause) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.select(table))]


def project(project_id: str, name: str) -> dict[str, Any]:
    """A project the body does not carry: the least a job listing must hold to be archived."""
    return {
        "id": project_id,
        "name": name,
        "created_at": "2026-05-14T12:00:00Z",
        "updated_at": "2026-05-14T12:00:00Z",
        "latest_job": None,
    }


DESCRIBED = body("bcli-job-describe-completed.json")
BCLI_JOB, BCLI_PROJECT = DESCRIBED["training_job"], DESCRIBED["training_project"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# ------------------------------------------------------------------------------------------------
# checkpoint listings


@pytest.mark.parametrize("name", ["bcli-checkpoints-list.json", "bcli-checkpoints-asc.json"])
def test_baseten_cli_checkpoint_listings_archive_every_checkpoint(archive: Engine, name: str) -> None:
    """baseten-cli's mocks send no `training_job_id`: the job is the one whose listing it is."""
    sent = body(name)
    report = fakes.sync(archive, fakes.one_listing(BCLI_PROJECT, BCLI_JOB, sent))
    assert report.exit_code == 0, report.failures
    stored = {row["checkpoint_id"]: row for row in select(archive, checkpoints)}
    assert set(stored) == {entry["checkpoint_id"] for entry in sent["checkpoints"]}
    for entry in sent["checkpoints"]:
        row = stored[entry["checkpoint_id"]]
        assert (row["training_job_id"], row["training_job_id_inferred"]) == ("job-1", True)
        assert (row["size_bytes"], row["created_at"]) == (entry["size_bytes"], at(entry["created_at"]))
        assert (row["sync_status"], row["checkpoint_type"], row["base_model"]) == (
            entry["sync_status"],
            entry["checkpoint_type"],
            entry["base_model"],
        )
    (job,) = select(archive, training_jobs)
    assert (job["node_count"], job["availability_model"], job["priority"]) == (2, "DEDICATED", 5)
    assert select(archive, rejected_entries) == []


def test_a_truss_checkpoint_listing_without_its_job_archives_every_checkpoint(archive: Engine) -> None:
    """truss's viewer mock has no `training_job` envelope and leaves out a full checkpoint's config."""
    sent = body("truss-checkpoint-viewer-sample.json")
    report = fakes.sync(archive, fakes.one_listing(BCLI_PROJECT, BCLI_JOB, sent))
    assert report.exit_code == 0, report.failures
    stored = {row["checkpoint_id"]: row for row in select(archive, checkpoints)}
    assert {k: (v["size_bytes"], v["base_model"], v["training_job_id"]) for k, v in stored.items()} == {
        "ckpt-001": (52428800, "meta-llama/Llama-3-8B", "job-1"),
        "ckpt-002": (2147483648, None, "job-1"),
        "ckpt-003": (104857600, "meta-llama/Llama-3-8B", "job-1"),
    }
    assert stored["ckpt-002"]["lora_adapter_config_id"] is None
    assert all(row["training_job_id_inferred"] for row in stored.values())
    (job,) = select(archive, training_jobs)
    assert job["id"] == "job-1" and job["node_count"] == 2  # from the job listing


def test_a_checkpoint_missing_what_the_api_promises_is_quarantined_by_name(archive: Engine) -> None:
    """truss's deploy mock sends no `created_at` or `size_bytes`: not guessed, kept aside with the reason."""
    sent = body("truss-deploy-checkpoints-mock.json")
    report = fakes.sync(archive, fakes.one_listing(BCLI_PROJECT, BCLI_JOB, sent))
    assert report.exit_code == 3
    (failure,) = report.failures
    assert failure.job_id == "job-1" and "checkpoints[0].created_at" in failure.message
    assert select(archive, checkpoints) == [] and len(select(archive, training_jobs)) == 1
    (quarantined,) = select(archive, rejected_entries)
    assert (quarantined["entry_id"], quarantined["field"]) == ("checkpoint-1", "checkpoints[0].created_at")
    assert quarantined["reason"] == "required field is missing"
    assert json.loads(quarantined["entry"]) == sent["checkpoints"][0]


def test_the_docs_example_archives_as_sent(archive: Engine) -> None:
    """docs.baseten.co's generated example: placeholder strings and an empty adapter config."""
    example = body("docs-get-training-job-checkpoints-example.json")
    job = example["training_job"]
    listed = project("<string>", "<string>")
    fake = FakeBaseten(OrgSpec(projects=0))
    base = f"/v1/training_projects/{quote('<string>', safe='')}"  # as a client sends the placeholder
    fake.override("GET", "/v1/training_projects", body={"training_projects": [listed]})
    fake.override("GET", f"{base}/jobs", body={"training_project": listed, "training_jobs": [job]})
    fake.override("GET", f"{base}/jobs/{quote('<string>', safe='')}/checkpoints", body=example)
    report = fakes.sync(archive, fake)
    assert report.exit_code == 0, report.failures
    (row,) = select(archive, checkpoints)
    assert (row["training_job_id"], row["checkpoint_id"], row["size_bytes"]) == ("<string>", "<string>", 123)
    assert row["training_job_id_inferred"] is False and row["lora_adapter_config_id"] is not None
    (stored,) = select(archive, training_jobs)
    assert (stored["name"], stored["node_count"], stored["availability_model"]) == ("gpt-oss-job", None, None)


def test_a_loops_checkpoint_keeps_its_target_and_ids(archive: Engine) -> None:
    loops = body("docs-loops-quickstart-checkpoints.json")
    job = {**copy.deepcopy(BCLI_JOB), "id": "e3mvjo3"}
    report = fakes.sync(archive, fakes.one_listing(BCLI_PROJECT, job, loops))
    assert report.exit_code == 0, report.failures
    (row,) = select(archive, checkpoints)
    entry = loops["checkpoints"][0]
    assert (row["checkpoint_id"], row["target"], row["training_job_id_inferred"]) == (
        "step-1",
        "sampler",
        True,
    )
    assert row["created_at"] == datetime(2026, 7, 1, 20, 50, 39, 854000, tzinfo=UTC)
    assert row["extra"] == {"id": entry["id"], "run_id": entry["run_id"]}


def test_one_bad_entry_among_30_leaves_29_archived_and_one_quarantined(archive: Engine) -> None:
    good = body("bcli-checkpoints-list.json")["checkpoints"][0]
    entries = [{**good, "checkpoint_id": f"ckpt-{i:02}", "size_bytes": 1000 + i} for i in range(30)]
    entries[17]["size_bytes"] = "17 GB"
    report = fakes.sync(
        archive, fakes.one_listing(BCLI_PROJECT, BCLI_JOB, {"training_job": BCLI_JOB, "checkpoints": entries})
    )
    assert report.exit_code == 3 and [f.job_id for f in report.failures] == ["job-1"]
    stored = {row["checkpoint_id"] for row in select(archive, checkpoints)}
    assert stored == {f"ckpt-{i:02}" for i in range(30)} - {"ckpt-17"}
    (quarantined,) = select(archive, rejected_entries)
    assert (quarantined["entry_id"], quarantined["field"]) == ("ckpt-17", "checkpoints[17].size_bytes")
    # The next night sends it whole: archived as usual, and the 29 are untouched.
    entries[17]["size_bytes"] = 1017
    report = fakes.sync(
        archive, fakes.one_listing(BCLI_PROJECT, BCLI_JOB, {"training_job": BCLI_JOB, "checkpoints": entries})
    )
    assert report.exit_code == 0 and len(select(archive, checkpoints)) == 30
    assert all(row["deleted_at"] is None for row in select(archive, checkpoints))


def test_a_quarantined_entry_is_never_taken_as_gone(archive: Engine) -> None:
    good = body("bcli-checkpoints-list.json")["checkpoints"][0]
    entries = [{**good, "checkpoint_id": f"ckpt-{i:02}"} for i in range(3)]
    listing = {"training_job": BCLI_JOB, "checkpoints": entries}
    assert fakes.sync(archive, fakes.one_listing(BCLI_PROJECT, BCLI_JOB, listing)).exit_code == 0
    broken = copy.deepcopy(listing)
    broken["checkpoints"][1]["created_at"] = "yesterday"
    report = fakes.sync(archive, fakes.one_listing(BCLI_PROJECT, BCLI_JOB, broken), SyncOptions(full=True))
    assert report.exit_code == 3
    stored = {row["checkpoint_id"]: row for row in select(archive, checkpoints)}
    assert stored["ckpt-01"]["deleted_at"] is None and stored["ckpt-01"]["created_at"] == at(
        good["created_at"]
    )


# ------------------------------------------------------------------------------------------------
# jobs and projects


def test_the_real_2025_job_on_two_nodes_counts_16_gpus(archive: Engine) -> None:
    """A job captured from a real run: `H200:2x8x128x1600`, "2 Nodes of 8 H200 GPUs", no `node_count`."""
    job = body("docs-training-deployment-job.json")
    listed = project(job["training_project_id"], job["training_project"]["name"])
    report = fakes.sync(archive, fakes.one_listing(listed, job, {"training_job": job, "checkpoints": []}))
    assert report.exit_code == 0, report.failures
    (facts,) = select(archive, job_facts)
    assert (facts["gpu_count"], facts["node_count"], facts["total_gpu_count"]) == (8, 2, 16)
    assert facts["node_count_source"] == "instance_type"
    (stored,) = select(archive, training_jobs)
    assert stored["node_count"] is None  # not sent: the archive says so, and job_facts says where 2 came from


@pytest.mark.parametrize("name", ["bcli-job-describe-completed.json", "bcli-job-describe-running.json"])
def test_a_described_job_archives_as_sent(archive: Engine, name: str) -> None:
    sent = body(name)
    job, listed = sent["training_job"], sent["training_project"]
    report = fakes.sync(archive, fakes.one_listing(listed, job, {"training_job": job, "checkpoints": []}))
    assert report.exit_code == 0, report.failures
    (stored,) = select(archive, training_jobs)
    assert (stored["id"], stored["current_status"], stored["user_email"]) == (
        "job-1",
        job["current_status"],
        "owner@example.com",
    )


def projects_fake(listing: dict[str, Any]) -> FakeBaseten:
    fake = FakeBaseten(OrgSpec(projects=0))
    fake.override("GET", "/v1/training_projects", body=listing)
    for entry in listing["training_projects"]:
        empty = {"training_project": entry, "training_jobs": []}
        fake.override("GET", f"/v1/training_projects/{entry['id']}/jobs", body=empty)
    return fake


@pytest.mark.parametrize(
    ("name", "archived", "quarantined"),
    [
        ("bcli-projects-list.json", {"proj-old", "proj-new"}, set()),
        ("bcli-projects-byid.json", {"other", "proj-1"}, set()),
        ("bcli-projects-single.json", {"proj-1"}, set()),
        # truss's mock leaves out created_at, updated_at and latest_job: kept aside, never guessed
        ("truss-projects-team.json", set(), {"project123", "project456"}),
    ],
)
def test_project_listings_archive_or_quarantine_every_entry(
    archive: Engine, name: str, archived: set[str], quarantined: set[str]
) -> None:
    sent = body(name)
    report: SyncReport = fakes.sync(archive, projects_fake(sent))
    assert report.exit_code == (3 if quarantined else 0), report.failures
    stored = {row["id"]: row for row in select(archive, training_projects)}
    assert set(stored) == archived
    assert {row["entry_id"] for row in select(archive, rejected_entries)} == quarantined
    for entry in sent["training_projects"]:
        if entry["id"] in stored:
            row = stored[entry["id"]]
            assert (row["name"], row["team_name"]) == (entry["name"], entry.get("team_name"))
            assert row["latest_job_id"] == (entry["latest_job"] or {}).get("id")


@pytest.mark.parametrize(
    "name",
    ["bcli-search-job-completed.json", "bcli-search-job-running.json", "bcli-search-job-hibernating.json"],
)
def test_a_job_searched_by_id_is_found_as_baseten_cli_finds_it(archive: Engine, name: str) -> None:
    found = body(name)
    job = found["training_jobs"][0]
    fake = fakes.one_listing(BCLI_PROJECT, job, {"training_job": job, "checkpoints": []})
    fake.override("POST", "/v1/training_jobs/search", body=found)
    report = fakes.sync(archive, fake, SyncOptions(Scope(job_ids=("job-1",))))
    assert report.exit_code == 0, report.failures
    (stored,) = select(archive, training_jobs)
    assert (stored["id"], stored["current_status"]) == ("job-1", job["current_status"])


@pytest.mark.parametrize("name", ["truss-search-download.json", "truss-search-poller.json"])
def test_truss_search_mocks_are_quarantined_and_fail_the_job_by_name(archive: Engine, name: str) -> None:
    """truss's search mocks carry only ids and names: the job's project cannot be read from them."""
    found = body(name)
    wanted = found["training_jobs"][0]["id"]
    fake = FakeBaseten(OrgSpec(projects=0))
    fake.override("POST", "/v1/training_jobs/search", body=found)
    report = fakes.sync(archive, fake, SyncOptions(Scope(job_ids=(wanted,))))
    assert report.exit_code == 3
    assert {row["entry_id"] for row in select(archive, rejected_entries)} == {
        entry["id"] for entry in found["training_jobs"]
    }
    assert select(archive, training_jobs) == []


def test_a_minimal_job_is_quarantined_in_its_listing(archive: Engine) -> None:
    core = body("truss-get-job-core.json")["training_job"]
    listed = project(core["training_project"]["id"], "proj")
    fake = FakeBaseten(OrgSpec(projects=0))
    fake.override("GET", "/v1/training_projects", body={"training_projects": [listed]})
    fake.override(
        "GET",
        f"/v1/training_projects/{listed['id']}/jobs",
        body={"training_project": listed, "training_jobs": [core]},
    )
    report = fakes.sync(archive, fake)
    assert report.exit_code == 3
    (quarantined,) = select(archive, rejected_entries)
    assert quarantined["entry_id"] == "job123" and quarantined["project_id"] == listed["id"]
    assert select(archive, training_jobs) == [] and len(select(archive, training_projects)) == 1


def test_every_real_body_is_replayed_by_a_test_here() -> None:
    """A body added to data/real-shaped/ must be replayed: this module names each one it reads."""
    source = Path(__file__).read_text()
    assert [path.name for path in sorted(REAL.glob("*.json")) if path.name not in source] == []
