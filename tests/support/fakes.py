"""Sync against the fake API in-process, through its transport: the whole path but the socket."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from archiver.client import BasetenClient, RetryPolicy
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, OrgSpec, Response
from archiver.sync import SyncOptions, SyncReport, run_sync

# A fake without faults needs no retries, and a failure should show at once.
ONCE = RetryPolicy(attempts=1)


def client_for(
    fake: FakeBaseten, *, key: str = DEFAULT_API_KEY, retry: RetryPolicy = ONCE, concurrency: int = 16
) -> BasetenClient:
    """A client that reaches `fake` in-process, unpaced."""
    return BasetenClient(
        key,
        "http://fake-baseten.invalid",
        max_rps=100_000,
        concurrency=concurrency,
        retry=retry,
        transport=fake.transport(),
    )


def sync(
    engine: Engine,
    fake: FakeBaseten,
    options: SyncOptions | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    key: str = DEFAULT_API_KEY,
    retry: RetryPolicy = ONCE,
) -> SyncReport:
    """Run one sync of `fake`'s organisation into `engine`, in-process."""
    options = options or SyncOptions()
    with client_for(fake, key=key, retry=retry, concurrency=options.concurrency) as client:
        if clock is None:
            return run_sync(engine, client, options)
        return run_sync(engine, client, options, clock=clock)


def one_listing(project: dict[str, Any], job: dict[str, Any], body: Any) -> FakeBaseten:
    """A fake whose one project lists `job`, whose checkpoint listing is `body` (any JSON, or raw bytes)."""
    fake = FakeBaseten(OrgSpec(projects=0))
    base = f"/v1/training_projects/{project['id']}"
    fake.override("GET", "/v1/training_projects", body={"training_projects": [project]})
    fake.override("GET", f"{base}/jobs", body={"training_project": project, "training_jobs": [job]})
    fake.override("GET", f"{base}/jobs/{job['id']}/checkpoints", body=body)
    return fake


def small_org(projects: int = 1) -> FakeBaseten:
    """An organisation of `projects` projects, each with one completed job that holds one checkpoint."""
    fake = FakeBaseten(OrgSpec(projects=0))
    for _ in range(projects):
        fake.add_project(jobs=1, checkpoints_per_job=1)
    return fake


def rate_limit_once(fake: FakeBaseten, path: str = "/v1/training_projects") -> None:
    """Answer the first request for `path` with a 429 that asks for no wait; the retry gets through."""
    answered: list[str] = []

    def hook(_method: str, requested: str, _body: bytes) -> Response | None:
        if requested.split("?")[0] != path or answered:
            return None
        answered.append(requested)
        return Response.of(429, {"error": "slow down", "retry_after": 0}, headers={"Retry-After": "0"})

    fake.intercept(hook)
