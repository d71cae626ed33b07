"""The fake Baseten API: the generated org, the protocol, mutations, in-process and over loopback."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from archiver.client import BasetenClient
from archiver.fake_api import (
    DEFAULT_API_KEY,
    TERMINAL_STATUSES,
    FakeBaseten,
    Faults,
    OrgSpec,
    Response,
    serve,
)
from archiver.fake_api import org as org_module
from archiver.sync import run_sync

from .support.schemas import properties, required
from .support.waiting import wait_for

AUTH = {"Authorization": f"Api-Key {DEFAULT_API_KEY}"}
MEDIUM = OrgSpec(seed=3, projects=10, jobs_per_project=10, checkpoints_per_job=5, active_fraction=0.3)


def get(fake: FakeBaseten, path: str, headers: dict[str, str] = AUTH) -> Response:
    return fake.handle("GET", path, headers, b"")


def search(fake: FakeBaseten, query: Any) -> Response:
    return fake.handle("POST", "/v1/training_jobs/search", AUTH, json.dumps(query).encode())


def checkpoints_path(fake: FakeBaseten, job_id: str) -> str:
    project_id = fake.job(job_id)["training_project_id"]
    return f"/v1/training_projects/{project_id}/jobs/{job_id}/checkpoints"


def every_path(fake: FakeBaseten) -> list[str]:
    paths = ["/v1/training_projects"]
    for project_id in fake.project_ids():
        paths += [f"/v1/training_projects/{project_id}", f"/v1/training_projects/{project_id}/jobs"]
        for job_id in fake.job_ids(project_id):
            paths += [f"/v1/training_projects/{project_id}/jobs/{job_id}", checkpoints_path(fake, job_id)]
    return paths


def all_checkpoints(fake: FakeBaseten) -> list[dict[str, Any]]:
    return [checkpoint for job_id in fake.job_ids() for checkpoint in fake.checkpoints(job_id)]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def job_with_checkpoints(fake: FakeBaseten, nth: int = 0) -> str:
    """Return the nth job that has at least two checkpoints (some generated jobs have none)."""
    return [j for j in fake.job_ids() if len(fake.checkpoints(j)) >= 2][nth]


def active_job_with_syncing(fake: FakeBaseten) -> str:
    for job_id in fake.job_ids():
        if any(c.get("sync_status") == "SYNCING" for c in fake.checkpoints(job_id)):
            return job_id
    raise AssertionError("the org has no job with a SYNCING checkpoint")


@pytest.fixture
def medium() -> FakeBaseten:
    return FakeBaseten(MEDIUM)


@pytest.fixture
def client_for() -> Iterator[Any]:
    """Serve fakes on loopback and hand back authenticated httpx clients, all closed at teardown."""
    stack: list[Any] = []

    def start(fake: FakeBaseten) -> httpx.Client:
        server = serve(fake)
        url = server.__enter__()
        client = httpx.Client(base_url=url, headers=AUTH, timeout=5.0)
        stack.append((server, client))
        return client

    yield start
    for server, client in reversed(stack):
        client.close()
        server.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------------
# the generated organisation


def test_same_seed_gives_byte_identical_responses_and_another_seed_differs() -> None:
    first, second, other = (
        FakeBaseten(OrgSpec(seed=7)),
        FakeBaseten(OrgSpec(seed=7)),
        FakeBaseten(OrgSpec(seed=8)),
    )
    paths = every_path(first)
    assert [get(first, p).body for p in paths] == [get(second, p).body for p in paths]
    assert search(first, {}).body == search(second, {}).body
    assert get(first, "/v1/training_projects").body != get(other, "/v1/training_projects").body


def test_totals_match_the_spec_and_the_served_lists(medium: FakeBaseten) -> None:
    assert len(medium.project_ids()) == 10
    assert len(medium.job_ids()) == 100
    total = medium.total_checkpoints()
    assert total == sum(
        len(get(medium, checkpoints_path(medium, j)).json()["checkpoints"]) for j in medium.job_ids()
    )
    assert 0.85 * 500 <= total <= 500


def test_active_fraction_is_exact_and_zero_means_every_job_terminal() -> None:
    statuses = [FakeBaseten(MEDIUM).job(j)["current_status"] for j in FakeBaseten(MEDIUM).job_ids()]
    assert sum(s not in TERMINAL_STATUSES for s in statuses) == 30

    calm = FakeBaseten(OrgSpec(projects=5, jobs_per_project=10, active_fraction=0.0, syncing_fraction=1.0))
    assert all(calm.job(j)["current_status"] in TERMINAL_STATUSES for j in calm.job_ids())
    assert {c.get("sync_status") for c in all_checkpoints(calm)} <= {"COMPLETE", "COMPLETED", None}


def test_syncing_fraction_applies_to_active_jobs_only() -> None:
    busy = FakeBaseten(OrgSpec(projects=4, jobs_per_project=5, active_fraction=0.5, syncing_fraction=1.0))
    for job_id in busy.job_ids():
        statuses = {c.get("sync_status") for c in busy.checkpoints(job_id)}
        if busy.job(job_id)["current_status"] in TERMINAL_STATUSES:
            assert "SYNCING" not in statuses
        else:
            assert statuses <= {"SYNCING"}


def test_ids_are_unique_seven_char_lowercase_alphanumerics(medium: FakeBaseten) -> None:
    ids = medium.project_ids() + medium.job_ids()
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 7 and i.isalnum() and i == i.lower() and i.isascii() for i in ids)


def test_timestamps_are_ordered_and_spelled_several_ways(medium: FakeBaseten) -> None:
    spellings: list[str] = []
    for project_id in medium.project_ids():
        project = medium.project(project_id)
        spellings.append(project["created_at"])
        for job_id in medium.job_ids(project_id):
            job = medium.job(job_id)
            spellings += [job["created_at"], job["updated_at"]]
            assert instant(project["created_at"]) <= instant(job["created_at"])
            assert instant(job["updated_at"]) <= instant(project["updated_at"])
            created = [instant(c["created_at"]) for c in medium.checkpoints(job_id)]
            assert created == sorted(set(created))
            assert all(
                instant(job["created_at"]) < moment <= instant(job["updated_at"]) for moment in created
            )
            spellings += [c["created_at"] for c in medium.checkpoints(job_id)]
    assert all(s.endswith("Z") or s.endswith("+00:00") for s in spellings)
    assert any("." in s for s in spellings)
    assert any(s.endswith("+00:00") for s in spellings)
    assert all(instant(s).year == 2026 for s in spellings)  # a fixed epoch, never the wall clock


def test_lists_are_sorted_by_created_at(medium: FakeBaseten) -> None:
    projects = get(medium, "/v1/training_projects").json()["training_projects"]
    assert [p["id"] for p in projects] == medium.project_ids()
    assert [instant(p["created_at"]) for p in projects] == sorted(instant(p["created_at"]) for p in projects)
    jobs = get(medium, f"/v1/training_projects/{projects[0]['id']}/jobs").json()["training_jobs"]
    assert [instant(j["created_at"]) for j in jobs] == sorted(instant(j["created_at"]) for j in jobs)


def test_every_endpoint_has_the_required_fields(medium: FakeBaseten) -> None:
    project_id = medium.project_ids()[0]
    job_id = medium.job_ids(project_id)[-1]
    base = f"/v1/training_projects/{project_id}"

    listed = get(medium, "/v1/training_projects").json()
    assert set(listed) == {"training_projects"}
    shown = get(medium, base).json()
    assert set(shown) == {"training_project"}
    jobs = get(medium, f"{base}/jobs").json()
    assert set(jobs) == {"training_project", "training_jobs"}
    job = get(medium, f"{base}/jobs/{job_id}").json()
    assert set(job) == {"training_project", "training_job"}
    cps = get(medium, f"{base}/jobs/{job_id}/checkpoints").json()
    assert set(cps) == {"training_job", "checkpoints"}

    projects = [*listed["training_projects"], shown["training_project"], jobs["training_project"]]
    assert all(set(p) >= required("TrainingProjectV1") for p in projects)
    assert shown["training_project"]["latest_job"] == job["training_job"]
    for each in [*jobs["training_jobs"], job["training_job"], cps["training_job"]]:
        assert set(each) >= required("TrainingJobV1")
        assert set(each["instance_type"]) == properties("InstanceTypeV1")
        assert set(each["training_project"]) == properties("TrainingProjectSummaryV1")
        assert each["training_project_id"] == project_id
    for checkpoint in all_checkpoints(medium):
        assert set(checkpoint) >= required("TrainingJobCheckpointV1")
        assert isinstance(checkpoint["size_bytes"], int)


def test_the_org_carries_the_quirks_the_archiver_must_handle(medium: FakeBaseten) -> None:
    jobs = [medium.job(j) for j in medium.job_ids()]
    checkpoints = all_checkpoints(medium)
    names = [medium.project(p)["name"] for p in medium.project_ids()]

    assert len(set(names)) < len(names)  # project names are not unique
    assert any(medium.project(p)["team_name"] is None for p in medium.project_ids())
    assert any(j["name"] is None for j in jobs) and any(j["user"] is None for j in jobs)
    assert all(j["error_message"] for j in jobs if j["current_status"] == "TRAINING_JOB_FAILED")
    assert any(j.get("node_count") == 2 for j in jobs)
    assert {j["availability_model"] for j in jobs} == {"dedicated", "spot"}
    assert {j["checkpoint_sync_status"] for j in jobs} == {"COMPLETED", "SYNCING", None}
    instance_types = {j["instance_type"]["id"]: j["instance_type"] for j in jobs}
    assert 3 <= len(instance_types) <= 5
    assert any(t["gpu_type"] is None and t["gpu_count"] == 0 for t in instance_types.values())

    assert {c.get("sync_status") for c in checkpoints} >= {"COMPLETE", "COMPLETED", "SYNCING"}
    assert any("sync_status" not in c for c in checkpoints)
    assert any("storage_region" in c for c in checkpoints)
    assert {c["checkpoint_type"] for c in checkpoints} == {"lora", "full", "whisper"}
    assert any(c["size_bytes"] > 2**31 for c in checkpoints)
    full = [c for c in checkpoints if c["checkpoint_type"] == "full"]
    assert all(c["base_model"] is None and c["lora_adapter_config"] is None for c in full)


def test_lora_configs_repeat_with_different_key_orders(medium: FakeBaseten) -> None:
    configs = [c["lora_adapter_config"] for c in all_checkpoints(medium) if c["checkpoint_type"] == "lora"]
    orders: dict[str, set[tuple[str, ...]]] = {}
    for config in configs:
        orders.setdefault(json.dumps(config, sort_keys=True), set()).add(tuple(config))
    assert 2 <= len(orders) <= 5 < len(configs)
    assert all(len(key_orders) > 1 for key_orders in orders.values())
    assert any(isinstance(json.loads(c)["target_modules"], str) for c in orders)
    assert all(isinstance(json.loads(c)["target_modules"], (str, list)) for c in orders)


def test_checkpoints_are_generated_on_demand_not_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    tracemalloc.start()
    try:
        fake = FakeBaseten(OrgSpec(projects=20, jobs_per_project=100, checkpoints_per_job=50))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # 100k stored checkpoint dicts would need several times this

    def generate(*args: object) -> list[dict[str, Any]]:
        raise AssertionError("counting checkpoints generated them")

    monkeypatch.setattr(org_module, "generated_checkpoints", generate)
    assert fake.total_checkpoints() > 90_000  # from the plans alone


# ------------------------------------------------------------------------------------------------
# the protocol


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Api-Key wrong-key-123"}, {"Authorization": "Token fake-baseten-key"}],
)
def test_missing_or_wrong_key_is_401_without_echoing_it(medium: FakeBaseten, headers: dict[str, str]) -> None:
    response = get(medium, "/v1/no/such/path", headers)
    assert response.status == 401
    assert response.json() == {"message": "Invalid API key"}
    assert b"wrong-key-123" not in response.body and b"fake-baseten-key" not in response.body


def test_api_key_and_bearer_schemes_are_both_accepted(medium: FakeBaseten) -> None:
    for scheme in ("Api-Key", "Bearer", "bearer"):
        assert (
            get(medium, "/v1/training_projects", {"authorization": f"{scheme} {DEFAULT_API_KEY}"}).status
            == 200
        )
    custom = FakeBaseten(OrgSpec(projects=1), api_key="s3cret")
    assert get(custom, "/v1/training_projects", {"Authorization": "Bearer s3cret"}).status == 200
    assert get(custom, "/v1/training_projects").status == 401


def test_unknown_ids_and_paths_are_404_and_wrong_methods_405(medium: FakeBaseten) -> None:
    project_id, other_project = medium.project_ids()[:2]
    job_id = medium.job_ids(project_id)[0]
    for path in (
        "/v1/training_projects/nosuch1",
        "/v1/training_projects/nosuch1/jobs",
        f"/v1/training_projects/{project_id}/jobs/nosuch1",
        f"/v1/training_projects/{project_id}/jobs/nosuch1/checkpoints",
        f"/v1/training_projects/{other_project}/jobs/{job_id}",  # a job under the wrong project
        "/v1/models",
    ):
        response = get(medium, path)
        assert response.status == 404, path
        assert "message" in response.json()
    assert medium.handle("POST", "/v1/training_projects", AUTH, b"{}").status == 405
    wrong = get(medium, "/v1/training_jobs/search")
    assert wrong.status == 405 and wrong.headers["Allow"] == "POST"


def test_query_strings_are_ignored_and_responses_are_json(medium: FakeBaseten) -> None:
    plain = get(medium, "/v1/training_projects")
    assert get(medium, "/v1/training_projects?limit=1&page=2").body == plain.body
    assert plain.headers["Content-Type"] == "application/json"
    assert plain.headers["Content-Length"] == str(len(plain.body))


def test_search_filters_and_orders(medium: FakeBaseten) -> None:
    project_id = medium.project_ids()[1]
    job_id = medium.job_ids(project_id)[2]
    everything = search(medium, {}).json()["training_jobs"]
    assert [j["id"] for j in everything] == medium.job_ids()[::-1]  # created_at desc by default
    nulls = {"project_id": None, "job_id": None, "statuses": None, "order_by": None}
    assert search(medium, nulls).json()["training_jobs"] == everything
    ascending = search(medium, {"order_by": [{"field": "created_at", "order": "asc"}]}).json()
    assert [j["id"] for j in ascending["training_jobs"]] == medium.job_ids()

    in_project = search(medium, {"project_id": project_id}).json()["training_jobs"]
    assert sorted(j["id"] for j in in_project) == sorted(medium.job_ids(project_id))
    assert [j["id"] for j in search(medium, {"job_id": job_id}).json()["training_jobs"]] == [job_id]
    assert search(medium, {"job_id": "nosuch1"}).json() == {"training_jobs": []}
    running = search(medium, {"statuses": ["TRAINING_JOB_RUNNING"]}).json()["training_jobs"]
    assert running and {j["current_status"] for j in running} == {"TRAINING_JOB_RUNNING"}


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b'{"statuses": "RUNNING"}', b'{"order_by": [{"field": "name"}]}']
)
def test_a_bad_search_body_is_400(medium: FakeBaseten, body: bytes) -> None:
    response = medium.handle("POST", "/v1/training_jobs/search", AUTH, body)
    assert response.status == 400 and "message" in response.json()


def test_project_without_jobs_has_null_latest_job(medium: FakeBaseten) -> None:
    project_id = medium.add_project(jobs=0)
    assert get(medium, f"/v1/training_projects/{project_id}").json()["training_project"]["latest_job"] is None
    assert get(medium, f"/v1/training_projects/{project_id}/jobs").json()["training_jobs"] == []


def test_returned_state_is_a_copy(medium: FakeBaseten) -> None:
    job_id = job_with_checkpoints(medium)
    medium.job(job_id)["instance_type"]["name"] = "mangled"
    medium.checkpoints(job_id)[0]["checkpoint_id"] = "mangled"
    assert b"mangled" not in get(medium, checkpoints_path(medium, job_id)).body


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def in_process(fake: FakeBaseten) -> httpx.Client:
    """An authenticated httpx client that reaches `fake` through its in-process transport."""
    return httpx.Client(base_url="http://fake.test", headers=AUTH, transport=fake.transport())


def test_rate_limit_answers_429_with_retry_after() -> None:
    clock = Clock()
    fake = FakeBaseten(OrgSpec(projects=1), rate_limit_rps=5, clock=clock)
    client = in_process(fake)
    statuses = [client.get("/v1/training_projects").status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    limited = client.get("/v1/training_projects")
    assert limited.headers["Retry-After"] == "1"
    assert limited.json() == {"error": "Rate limit exceeded. Please try again later.", "retry_after": 1}
    assert [r.status for r in fake.requests].count(429) == 4  # rejected requests are still recorded

    clock.now += 1.0
    assert client.get("/v1/training_projects").status_code == 200


def test_rate_limit_can_omit_the_retry_after_header() -> None:
    fake = FakeBaseten(OrgSpec(projects=1), rate_limit_rps=1, retry_after_header=False, clock=Clock())
    client = in_process(fake)
    client.get("/v1/training_projects")
    limited = client.get("/v1/training_projects")
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.json()["retry_after"] >= 1


def test_max_requests_in_window_counts_starts() -> None:
    clock = Clock()
    fake = FakeBaseten(OrgSpec(projects=1), clock=clock)
    client = in_process(fake)
    for _ in range(3):
        client.get("/v1/training_projects")
    clock.now += 0.4
    for _ in range(2):
        client.get("/v1/training_projects")
    assert fake.max_requests_in_window(0.2) == 3
    assert fake.max_requests_in_window(1.0) == 5


def test_an_override_answers_through_the_protocol_and_counts(medium: FakeBaseten) -> None:
    project_id = medium.project_ids()[0]
    path = f"/v1/training_projects/{project_id}/jobs"
    usual = get(medium, path).body
    medium.override("GET", path, 200, {"training_project": None, "training_jobs": []})
    medium.override("GET", "/v1/training_projects", 503, b"<html>busy</html>")
    medium.reset_metrics()

    assert get(medium, f"{path}?page=2").json() == {"training_project": None, "training_jobs": []}
    busy = get(medium, "/v1/training_projects")
    assert (busy.status, busy.body) == (503, b"<html>busy</html>")
    assert busy.headers["Content-Length"] == str(len(busy.body))
    assert get(medium, path, headers={}).status == 401  # auth first, as for any request
    assert medium.handle("POST", path, AUTH, b"").status == 405  # other methods are not overridden
    assert medium.request_count() == 4

    medium.override("GET", path, 404, {"message": "gone"})  # the newest override wins
    assert get(medium, path).status == 404
    medium.clear_overrides()
    assert get(medium, path).body == usual


def test_an_override_meets_faults_like_any_answer() -> None:
    fake = FakeBaseten(OrgSpec(projects=1), faults=Faults(rate=1.0, kinds=("503",)))
    fake.override("GET", "/v1/training_projects", 200, {"training_projects": []})
    assert get(fake, "/v1/training_projects").status == 503


def test_a_hook_sees_every_request_and_answers_only_when_it_wants(medium: FakeBaseten) -> None:
    seen: list[tuple[str, str, bytes]] = []

    def hook(method: str, path: str, body: bytes) -> Response | None:
        seen.append((method, path, body))
        return Response.of(418, b"teapot", content_type="text/plain") if "search" in path else None

    medium.intercept(hook)
    assert get(medium, "/v1/training_projects").json()["training_projects"]
    answer = search(medium, {"job_id": "x"})
    assert (answer.status, answer.body, answer.headers["Content-Type"]) == (418, b"teapot", "text/plain")
    assert seen == [
        ("GET", "/v1/training_projects", b""),
        ("POST", "/v1/training_jobs/search", b'{"job_id": "x"}'),
    ]


# ------------------------------------------------------------------------------------------------
# mutations


def test_add_checkpoint_appends_the_next_step_and_bumps_updated_at(medium: FakeBaseten) -> None:
    job_id = job_with_checkpoints(medium, 5)
    before_job, before_total = medium.job(job_id), medium.total_checkpoints()
    project_id = before_job["training_project_id"]
    before_project = medium.project(project_id)
    steps = [int(c["checkpoint_id"].split("-")[1]) for c in medium.checkpoints(job_id)]

    added = medium.add_checkpoint(job_id, size_bytes=123)

    served = get(medium, checkpoints_path(medium, job_id)).json()
    assert served["checkpoints"][-1] == added
    assert added["checkpoint_id"] == f"checkpoint-{max(steps) + (steps[1] - steps[0])}"
    assert added["size_bytes"] == 123 and added["training_job_id"] == job_id
    assert instant(served["training_job"]["updated_at"]) > instant(before_job["updated_at"])
    assert instant(added["created_at"]) <= instant(served["training_job"]["updated_at"])
    assert instant(medium.project(project_id)["updated_at"]) > instant(before_project["updated_at"])
    assert medium.total_checkpoints() == before_total + 1


def test_delete_and_update_checkpoint_show_up_in_responses(medium: FakeBaseten) -> None:
    job_id = job_with_checkpoints(medium)
    first, second = (c["checkpoint_id"] for c in medium.checkpoints(job_id)[:2])
    updated_before = instant(medium.job(job_id)["updated_at"])

    medium.delete_checkpoint(job_id, first)
    medium.update_checkpoint(job_id, second, sync_status="SYNCING", size_bytes=7)

    served = get(medium, checkpoints_path(medium, job_id)).json()
    assert first not in [c["checkpoint_id"] for c in served["checkpoints"]]
    assert served["checkpoints"][0]["sync_status"] == "SYNCING"
    assert served["checkpoints"][0]["size_bytes"] == 7
    assert instant(served["training_job"]["updated_at"]) > updated_before
    with pytest.raises(KeyError):
        medium.delete_checkpoint(job_id, first)
    with pytest.raises(KeyError):
        medium.update_checkpoint("nosuch1", second, size_bytes=1)


def test_a_job_that_finishes_stops_syncing(medium: FakeBaseten) -> None:
    job_id = active_job_with_syncing(medium)
    before = medium.job(job_id)

    medium.set_job(job_id, current_status="TRAINING_JOB_COMPLETED")

    job = get(medium, f"/v1/training_projects/{before['training_project_id']}/jobs/{job_id}").json()[
        "training_job"
    ]
    assert job["current_status"] == "TRAINING_JOB_COMPLETED"
    assert job["checkpoint_sync_status"] == "COMPLETED"
    assert instant(job["updated_at"]) > instant(before["updated_at"])
    assert "SYNCING" not in {c.get("sync_status") for c in medium.checkpoints(job_id)}


def test_set_job_keeps_an_explicit_updated_at_and_refuses_identity_fields(medium: FakeBaseten) -> None:
    job_id = medium.job_ids()[0]
    medium.set_job(job_id, name="renamed", updated_at="2027-03-01T00:00:00Z")
    assert medium.job(job_id)["name"] == "renamed"
    assert medium.job(job_id)["updated_at"] == "2027-03-01T00:00:00Z"
    with pytest.raises(ValueError):
        medium.set_job(job_id, training_project_id="other12")


def test_deleted_jobs_and_projects_disappear(medium: FakeBaseten) -> None:
    project_id, doomed_project = medium.project_ids()[:2]
    doomed_job = medium.job_ids(project_id)[-1]
    doomed_jobs = medium.job_ids(doomed_project)

    medium.delete_job(doomed_job)
    medium.delete_project(doomed_project)

    assert get(medium, f"/v1/training_projects/{project_id}/jobs/{doomed_job}").status == 404
    assert medium.project(project_id)["latest_job"]["id"] == medium.job_ids(project_id)[-1]
    assert get(medium, f"/v1/training_projects/{doomed_project}").status == 404
    remaining = {j["id"] for j in search(medium, {}).json()["training_jobs"]}
    assert doomed_job not in remaining and not remaining & set(doomed_jobs)
    assert medium.total_checkpoints() == sum(len(medium.checkpoints(j)) for j in medium.job_ids())


def test_add_project_appears_newest_with_exact_checkpoints(medium: FakeBaseten) -> None:
    before = medium.total_checkpoints()
    project_id = medium.add_project(jobs=2, checkpoints_per_job=3)
    assert medium.project_ids()[-1] == project_id
    assert len(medium.job_ids(project_id)) == 2
    assert medium.total_checkpoints() == before + 6
    latest = medium.project(project_id)["latest_job"]
    assert latest["id"] == medium.job_ids(project_id)[-1]
    assert latest["current_status"] == "TRAINING_JOB_COMPLETED"


def test_mutations_are_deterministic_too() -> None:
    def scenario() -> list[bytes]:
        fake = FakeBaseten(MEDIUM)
        job_id = fake.job_ids()[3]
        fake.add_checkpoint(job_id)
        fake.set_job(fake.job_ids()[4], current_status="TRAINING_JOB_STOPPED")
        fake.add_project(jobs=1)
        return [get(fake, path).body for path in every_path(fake)]

    assert scenario() == scenario()


def test_concurrent_mutations_are_not_lost(medium: FakeBaseten) -> None:
    job_id = medium.job_ids()[0]
    before = len(medium.checkpoints(job_id))
    workers = [
        threading.Thread(target=lambda: [medium.add_checkpoint(job_id) for _ in range(25)]) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    ids = [c["checkpoint_id"] for c in medium.checkpoints(job_id)]
    assert len(ids) == len(set(ids)) == before + 100


def test_set_project_renames_everywhere_and_moves_updated_at(medium: FakeBaseten) -> None:
    project_id = medium.project_ids()[2]
    job_id = medium.job_ids(project_id)[0]
    listing = f"/v1/training_projects/{project_id}/jobs"
    before = get(medium, listing).json()
    checkpoints_before = get(medium, checkpoints_path(medium, job_id)).json()  # cached now

    medium.set_project(project_id, name="renamed 🦜", team_name="research")

    after = get(medium, listing).json()
    assert after["training_project"]["name"] == "renamed 🦜"
    assert after["training_project"]["team_name"] == "research"
    assert instant(after["training_project"]["updated_at"]) > instant(
        before["training_project"]["updated_at"]
    )
    assert {j["training_project"]["name"] for j in after["training_jobs"]} == {"renamed 🦜"}
    assert after["training_jobs"] == [
        {**j, "training_project": {"id": project_id, "name": "renamed 🦜"}} for j in before["training_jobs"]
    ]  # the jobs themselves did not change
    served = get(medium, checkpoints_path(medium, job_id)).json()
    assert served["training_job"]["training_project"]["name"] == "renamed 🦜"
    assert served["checkpoints"] == checkpoints_before["checkpoints"]
    assert medium.project(project_id)["latest_job"]["training_project"]["name"] == "renamed 🦜"


def test_set_project_keeps_an_explicit_updated_at_and_refuses_identity_fields(medium: FakeBaseten) -> None:
    project_id = medium.project_ids()[0]
    medium.set_project(project_id, team_name=None, updated_at="2027-03-01T00:00:00Z")
    assert medium.project(project_id)["team_name"] is None
    assert medium.project(project_id)["updated_at"] == "2027-03-01T00:00:00Z"
    with pytest.raises(ValueError, match="cannot change"):
        medium.set_project(project_id, id="other12")
    with pytest.raises(ValueError, match="cannot change"):
        medium.set_project(project_id, latest_job=None)
    with pytest.raises(KeyError):
        medium.set_project("nosuch1", name="x")


# ------------------------------------------------------------------------------------------------
# in-process, through the httpx transport


def test_the_transport_serves_what_handle_answers(medium: FakeBaseten) -> None:
    client = in_process(medium)
    for path in every_path(medium)[:12]:
        response = client.get(path)
        assert response.status_code == 200
        assert response.content == get(medium, path).body
        assert response.headers["content-type"] == "application/json"
    posted = client.post("/v1/training_jobs/search", json={"statuses": ["TRAINING_JOB_RUNNING"]})
    assert posted.json() == search(medium, {"statuses": ["TRAINING_JOB_RUNNING"]}).json()
    assert client.get("/v1/training_projects", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.head("/v1/training_projects").content == b""
    assert medium.request_count("/v1/training_jobs/search") == 2  # one through each way in


def test_the_client_syncs_through_the_transport(archive: Engine) -> None:
    fake = FakeBaseten(OrgSpec(seed=2, projects=2, jobs_per_project=2, checkpoints_per_job=2))
    with BasetenClient(DEFAULT_API_KEY, "http://fake.test", transport=fake.transport()) as client:
        report = run_sync(archive, client)
    assert report.exit_code == 0 and report.counts.checkpoints_inserted == fake.total_checkpoints() > 0
    assert fake.request_count() == 1 + 2 + 4


@pytest.mark.parametrize(
    ("kind", "error"),
    [("reset", httpx.ReadError), ("truncate", httpx.RemoteProtocolError)],
)
def test_connection_faults_raise_what_httpx_raises_over_a_socket(kind: str, error: type[Exception]) -> None:
    fake = FakeBaseten(OrgSpec(projects=1), faults=Faults(rate=1.0, kinds=(kind,)))
    with pytest.raises(error):
        in_process(fake).get("/v1/training_projects")
    assert [r.status for r in fake.requests] == [0 if kind == "reset" else 200]


def test_truncate_fault_delivers_half_the_promised_body_in_process() -> None:
    fake = FakeBaseten(OrgSpec(projects=1), faults=Faults(rate=1.0, kinds=("truncate",)))
    with in_process(fake).stream("GET", "/v1/training_projects") as response:
        promised = int(response.headers["Content-Length"])
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                received += chunk
    assert response.status_code == 200 and 0 < len(received) == promised // 2


def test_a_delay_past_the_read_timeout_is_a_read_timeout_in_process() -> None:
    fake = FakeBaseten(OrgSpec(projects=1), faults=Faults(rate=1.0, kinds=("delay",), delay_s=0.2))
    client = in_process(fake)
    started = time.perf_counter()
    assert client.get("/v1/training_projects").status_code == 200  # httpx's default timeout is 5 s
    assert time.perf_counter() - started >= 0.2
    with pytest.raises(httpx.ReadTimeout):
        client.get("/v1/training_projects", timeout=0.05)
    assert [r.status for r in fake.requests] == [200, 0]


# ------------------------------------------------------------------------------------------------
# over real loopback HTTP


def test_serves_every_endpoint_over_keep_alive_http(client_for: Any, medium: FakeBaseten) -> None:
    client = client_for(medium)
    expected = {path: get(medium, path).body for path in every_path(medium)[:12]}
    medium.reset_metrics()
    for path, body in expected.items():
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content == body
    assert client.post("/v1/training_jobs/search", json={"statuses": None}).status_code == 200
    assert client.get("/v1/training_projects", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert medium.request_count("/v1/training_projects") == 13
    assert medium.request_count("/v1/training_jobs/search") == 1

    connection = http.client.HTTPConnection(client.base_url.host, client.base_url.port, timeout=5)
    for _ in range(2):  # the second request only works if the first left the connection open
        connection.request("GET", "/v1/training_projects", headers=AUTH)
        answer = connection.getresponse()
        assert answer.status == 200 and answer.version == 11
        assert json.loads(answer.read())["training_projects"]
    connection.close()


def test_latency_and_concurrency_metrics(client_for: Any) -> None:
    fake = FakeBaseten(OrgSpec(projects=1), latency_ms=150)
    url = str(client_for(fake).base_url)

    def one() -> None:
        httpx.get(f"{url}/v1/training_projects", headers=AUTH, timeout=60.0).raise_for_status()

    started = time.perf_counter()
    one()
    assert time.perf_counter() - started >= 0.15
    # None of the four answers until all four are being handled: four in flight, however slow the machine.
    together = threading.Barrier(4, timeout=60)

    def meet(method: str, path: str, body: bytes) -> None:
        together.wait()

    fake.intercept(meet)
    workers = [threading.Thread(target=one) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert fake.max_in_flight == 4 and fake.in_flight == 0
    assert all(r.finished - r.started >= 0.15 for r in fake.requests)
    fake.reset_metrics()
    assert fake.requests == [] and fake.max_in_flight == 0


@pytest.mark.parametrize(
    ("kind", "status", "retry_after_header"),
    [
        ("429", 429, True),
        ("429-no-header", 429, False),
        ("500", 500, None),
        ("502", 502, None),
        ("503", 503, None),
    ],
)
def test_status_faults(client_for: Any, kind: str, status: int, retry_after_header: bool | None) -> None:
    client = client_for(FakeBaseten(OrgSpec(projects=1), faults=Faults(rate=1.0, kinds=(kind,))))
    responses = [client.get("/v1/training_projects") for _ in range(6)]
    assert {r.status_code for r in responses} == {status}
    if status == 429:
        assert all(r.json()["retry_after"] == 1 for r in responses)
        assert all(("retry-after" in r.headers) is retry_after_header for r in responses)
    else:
        # Some 5xx come as a load balancer's HTML page, some as JSON.
        assert {r.headers["content-type"].split(";")[0] for r in responses} == {
            "application/json",
            "text/html",
        }


def test_401_is_never_faulted(client_for: Any) -> None:
    client = client_for(FakeBaseten(OrgSpec(projects=1), faults=Faults(rate=1.0, kinds=("500",))))
    assert client.get("/v1/training_projects", headers={"Authorization": ""}).status_code == 401


def test_fault_sequence_is_deterministic_for_a_seed() -> None:
    def statuses(seed: int) -> list[int]:
        fake = FakeBaseten(
            OrgSpec(projects=1), faults=Faults(seed=seed, rate=0.5, kinds=("500", "503", "reset"))
        )
        return [get(fake, "/v1/training_projects").status for _ in range(40)]

    assert statuses(1) == statuses(1) != statuses(2)
    assert {0, 200} < set(statuses(1))  # 0 is how a reset is recorded


def test_reset_drops_the_connection_and_the_server_survives(
    client_for: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    fake = FakeBaseten(OrgSpec(projects=1), faults=Faults(seed=4, rate=0.5, kinds=("reset",)))
    client = client_for(fake)
    outcomes = []
    for _ in range(12):
        try:
            outcomes.append(client.get("/v1/training_projects").status_code)
        except httpx.TransportError:
            outcomes.append("reset")
    assert "reset" in outcomes and 200 in outcomes
    assert capfd.readouterr().err == ""


def test_delay_fault_answers_late_but_normally(client_for: Any) -> None:
    client = client_for(
        FakeBaseten(OrgSpec(projects=1), faults=Faults(rate=1.0, kinds=("delay",), delay_s=0.2))
    )
    started = time.perf_counter()
    response = client.get("/v1/training_projects")
    assert time.perf_counter() - started >= 0.2
    assert response.status_code == 200 and response.json()["training_projects"]


def test_truncate_fault_sends_half_the_promised_body(client_for: Any) -> None:
    client = client_for(FakeBaseten(OrgSpec(projects=1), faults=Faults(rate=1.0, kinds=("truncate",))))
    with pytest.raises(httpx.TransportError):
        client.get("/v1/training_projects")

    connection = http.client.HTTPConnection(client.base_url.host, client.base_url.port, timeout=5)
    connection.request("GET", "/v1/training_projects", headers=AUTH)
    answer = connection.getresponse()
    promised = int(answer.headers["Content-Length"])
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        answer.read()
    partial = excinfo.value.partial
    assert answer.status == 200 and 0 < len(partial) < promised
    with pytest.raises(json.JSONDecodeError):
        json.loads(partial)
    connection.close()


def test_a_client_hanging_up_mid_request_does_not_hurt_the_server(
    client_for: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    fake = FakeBaseten(OrgSpec(projects=1), latency_ms=50)
    client = client_for(fake)
    with socket.create_connection((client.base_url.host, client.base_url.port)) as raw:
        raw.sendall(b"GET /v1/training_projects HTTP/1.1\r\nAuthorization: Api-Key fake-baseten-key\r\n\r\n")
    with socket.create_connection((client.base_url.host, client.base_url.port)) as raw:
        raw.sendall(b"GET /v1/training_projects HTTP/1.1\r\nContent-Le")
    wait_for(lambda: fake.request_count() >= 1, "the answer to the client that hung up")
    assert client.get("/v1/training_projects").status_code == 200
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("kind", ["not-json", "truncated", "missing-field", "wrong-type", "list-for-object"])
def test_broken_jobs_always_answer_200_with_a_broken_body(client_for: Any, kind: str) -> None:
    healthy = FakeBaseten(MEDIUM)
    job_id = healthy.job_ids()[7]
    fake = FakeBaseten(MEDIUM, faults=Faults(broken_jobs={job_id: kind}))
    client = client_for(fake)
    path = checkpoints_path(fake, job_id)

    first, second = client.get(path), client.get(path)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content  # persistent, not transient
    if kind in ("not-json", "truncated"):
        with pytest.raises(json.JSONDecodeError):
            first.json()
    else:
        body = first.json()
        if kind == "missing-field":
            assert "checkpoint_id" not in body["checkpoints"][0]
        elif kind == "wrong-type":
            assert body["checkpoints"][0]["size_bytes"] == "big"
        else:
            assert isinstance(body["training_job"], list)
    other = healthy.job_ids()[8]
    assert (
        client.get(checkpoints_path(fake, other)).json()
        == get(healthy, checkpoints_path(healthy, other)).json()
    )


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        Faults(kinds=("teapot",))
    with pytest.raises(ValueError, match="unknown broken-job kinds"):
        Faults(broken_jobs={"abc1234": "on-fire"})


def test_serve_stops_cleanly_and_closes_keep_alive_connections() -> None:
    threads_before = threading.active_count()
    fake = FakeBaseten(OrgSpec(projects=1))
    with serve(fake) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        assert client.get("/v1/training_projects").status_code == 200
    wait_for(lambda: threading.active_count() == threads_before, "the server's threads to end")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/training_projects", headers=AUTH)


@pytest.mark.slow
def test_serve_forever_reports_its_url_and_returns_on_interrupt() -> None:
    code = (
        "from archiver.fake_api import FakeBaseten, OrgSpec, serve_forever\n"
        "serve_forever(FakeBaseten(OrgSpec(projects=1)), ready=lambda url: print(url, flush=True))\n"
        "print('stopped', flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert httpx.get(f"{url}/v1/training_projects", headers=AUTH).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0  # returns, however busy the machine (5 s once failed under load)
        assert process.stdout.read().strip() == "stopped"
    finally:
        process.kill()
        process.wait()
