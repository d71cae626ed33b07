"""The HTTP client: auth header, pacing, and what each failure turns into."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from archiver.client import BasetenClient, RateLimiter, RetryPolicy
from archiver.errors import ApiError, AuthError, MalformedResponse, NotFound

KEY = "sk-test-3f9a1c"
PROJECTS = {"training_projects": []}


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], waits: list[float] | None = None, attempts: int = 4
) -> BasetenClient:
    recorded = waits if waits is not None else []

    def wait(seconds: float) -> bool:
        recorded.append(seconds)
        return False

    return BasetenClient(
        KEY,
        "https://api.example.test",
        max_rps=1000,
        retry=RetryPolicy(attempts=attempts, backoff_s=0.5, max_backoff_s=4),
        transport=httpx.MockTransport(handler),
        wait=wait,
    )


def sequence(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def test_sends_the_documented_auth_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PROJECTS)

    assert client_for(handler).list_projects() == []
    assert seen[0].headers["Authorization"] == f"Api-Key {KEY}"
    assert seen[0].url.path == "/v1/training_projects"
    assert seen[0].headers["User-Agent"].startswith("archiver/")


def test_429_waits_as_told_then_retries() -> None:
    waits: list[float] = []
    client = client_for(
        sequence(
            httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow down", "retry_after": 37}),
            httpx.Response(429, json={"error": "Rate limit exceeded.", "retry_after": 3}),
            httpx.Response(200, json=PROJECTS),
        ),
        waits,
    )
    assert client.list_projects() == []
    assert waits == [7.0, 3.0]
    assert client.rate_limited == 2


def test_5xx_and_resets_back_off_with_jitter_then_succeed() -> None:
    waits: list[float] = []
    client = client_for(
        sequence(
            httpx.Response(503, text="<html>unavailable</html>"),
            httpx.ConnectError("connection refused"),
            httpx.ReadTimeout("timed out"),
            httpx.Response(200, json=PROJECTS),
        ),
        waits,
    )
    assert client.list_projects() == []
    assert len(waits) == 3
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0 and 1.0 <= waits[2] <= 2.0


def test_retries_are_bounded() -> None:
    client = client_for(lambda request: httpx.Response(500, text="boom"), attempts=3)
    with pytest.raises(ApiError, match="gave up after 3 attempts"):
        client.get_checkpoints("n4q95w5", "p7qr9qv")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_fatal_at_once_and_never_echoed(status: int) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"message": f"bad key {KEY}"})

    with pytest.raises(AuthError) as raised:
        client_for(handler).list_projects()
    assert calls == [1]
    assert KEY not in str(raised.value) and "refused the API key" in str(raised.value)


def test_404_is_not_found_with_its_location() -> None:
    client = client_for(lambda request: httpx.Response(404, json={"message": "not found"}))
    with pytest.raises(NotFound) as raised:
        client.get_checkpoints("n4q95w5", "p7qr9qv")
    assert "project n4q95w5" in str(raised.value) and "job p7qr9qv" in str(raised.value)


def test_non_json_body_is_malformed_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, text="<html>maintenance</html>", headers={"Content-Type": "text/html"})

    with pytest.raises(MalformedResponse, match="not valid JSON"):
        client_for(handler).get_checkpoints("n4q95w5", "p7qr9qv")
    assert calls == [1]


def test_search_posts_the_job_id() -> None:
    bodies: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"training_jobs": []})

    assert client_for(handler).search_jobs(job_id="p7qr9qv") == []
    assert bodies == [{"job_id": "p7qr9qv", "project_id": None}]


def test_rate_limiter_never_admits_more_than_rate_in_any_second() -> None:
    limiter = RateLimiter(20)
    starts = []
    began = time.monotonic()
    for _ in range(45):
        limiter.acquire()
        starts.append(time.monotonic())
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) <= 20
    assert time.monotonic() - began >= 2.0
