"""`--concurrency` and `--max-rps` are honoured, as the fake API sees the requests (not timed: gaps and counts)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpcore
import pytest

from archiver.client import BasetenClient, RetryPolicy
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, OrgSpec, serve

from .support.commands import run_archiver, sync_env

SPEC = OrgSpec(seed=3, projects=4, jobs_per_project=10, checkpoints_per_job=2)
REQUESTS = 1 + 4 + 40
# The fake stamps a request when its handler thread gets to it, which lags the client's start by
# however long the busy machine takes to schedule that thread. Starts the client spread over one
# second can then look bunched into less; a window shorter by this much holds no more of them.
DELIVERY_JITTER_S = 0.05


@pytest.mark.slow
@pytest.mark.parametrize(
    ("latency_ms", "concurrency", "max_rps"),
    [
        pytest.param(150, 3, 50, id="concurrency-binds"),  # 3 in flight at 150 ms: 20/s at most
        pytest.param(10, 8, 15, id="rate-binds"),  # 8 in flight at 10 ms could do 800/s
    ],
)
def test_concurrency_and_rate_are_honoured(
    database_url: str, latency_ms: float, concurrency: int, max_rps: float
) -> None:
    fake = FakeBaseten(SPEC, latency_ms=latency_ms)
    with serve(fake) as url:
        options = ("--concurrency", str(concurrency), "--max-rps", str(max_rps))
        result = run_archiver("sync", *options, env=sync_env(url, database_url))
    assert result.exit_code == 0, result.output
    assert fake.request_count() == REQUESTS
    assert fake.max_in_flight <= concurrency
    assert fake.max_requests_in_window(1.0 - DELIVERY_JITTER_S) <= max_rps
    # Each setting was the binding one, so the assertions above were tested, not vacuous.
    if max_rps * latency_ms / 1000 > concurrency:
        assert fake.max_in_flight == concurrency
    else:
        assert fake.max_requests_in_window(1.0) >= max_rps - 1


def test_requests_reach_the_api_at_the_pace_however_long_each_took_to_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request is held on the wire, once connected, while it would make more than --max-rps there.
    Paced only before it was handed over, a request held back on the way (here by a slow connect; in
    a busy run, by the GIL) kept a turn of an earlier second and reached the API among the next
    second's: more in a second than the pace."""
    delays = iter([0.9, 0.0, 0.0, 0.0])  # the first connection opened takes 0.9 s
    lock = threading.Lock()
    connect = httpcore.SyncBackend.connect_tcp

    def slow_connect(backend: httpcore.SyncBackend, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        with lock:
            delay = next(delays)
        time.sleep(delay)
        return connect(backend, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", slow_connect)
    fake = FakeBaseten(SPEC)
    (project,) = fake.project_ids()[:1]
    jobs = fake.job_ids(project)[:4]
    with (
        serve(fake) as url,
        BasetenClient(DEFAULT_API_KEY, url, max_rps=2, concurrency=4) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        answers = list(pool.map(lambda job: client.get_checkpoints(project, job), jobs))
    assert [answer.status for answer in answers] == [200] * 4
    # Turns taken before connecting: at 0, 0, 1.0 and 1.5 s, the first sent at 0.9 s, three in 0.6 s.
    assert fake.max_requests_in_window(1.0 - DELIVERY_JITTER_S) <= 2


def test_the_wait_for_a_turn_is_not_part_of_a_try_timeout() -> None:
    """A try waits for its turn under --max-rps (and may be held again on the wire); --timeout bounds
    the try itself, not those waits."""
    fake = FakeBaseten(SPEC)
    (project,) = fake.project_ids()[:1]
    jobs = fake.job_ids(project)[:3]
    quick = RetryPolicy(attempts=1, timeout_s=0.5)
    with (
        serve(fake) as url,
        BasetenClient(DEFAULT_API_KEY, url, max_rps=1, concurrency=3, retry=quick) as client,
        ThreadPoolExecutor(3) as pool,
    ):
        answers = list(pool.map(lambda job: client.get_checkpoints(project, job), jobs))
    assert [answer.status for answer in answers] == [200] * 3  # the last waited about 2 s for its turn
    assert fake.request_count() == 3 and fake.max_requests_in_window(1.0 - DELIVERY_JITTER_S) <= 1
