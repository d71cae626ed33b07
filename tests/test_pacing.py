"""`--concurrency` and `--max-rps` are honoured, as the fake API sees the requests (not timed)."""

from __future__ import annotations

import pytest

from archiver.fake_api import FakeBaseten, OrgSpec, serve

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
