"""The fault-injection property: a faulty night, rerun if need be, archives exactly what a quiet one does."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from archiver import db, migrate
from archiver.client import RetryPolicy
from archiver.errors import ApiUnavailable
from archiver.fake_api import FakeBaseten, Faults, OrgSpec
from archiver.sync import SyncOptions, SyncReport

from .support import fakes
from .support.archive_dump import dump

# Few, fast retries: some jobs fail and the reruns must finish them; the property is about
# outcomes, not waits. The timeout sits below the fake's delay fault, so "delay" means a read
# timeout here (the in-process transport raises it as a socket would).
FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05, deadline_s=30, timeout_s=0.5)
MAX_RERUNS = 4
# Seeds pick both the organisation and the fault sequence; rates go up to 30% of all requests.
CASES = [
    (seed, rate) for seed, rate in zip(range(8), (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.3, 0.3), strict=True)
]


def spec_for(seed: int) -> OrgSpec:
    return OrgSpec(seed=seed, projects=3, jobs_per_project=4, checkpoints_per_job=3)


def sync_once(engine: Engine, fake: FakeBaseten) -> SyncReport:
    return fakes.sync(engine, fake, SyncOptions(concurrency=4, batch_rows=5), retry=FAST)


def archive_at(url: str) -> Engine:
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    return engine


@pytest.mark.parametrize(("seed", "rate"), CASES)
def test_a_faulty_night_then_reruns_equals_a_quiet_night(
    seed: int, rate: float, database_url: str, new_database: Callable[[], str]
) -> None:
    quiet = archive_at(new_database())
    clean = sync_once(quiet, FakeBaseten(spec_for(seed)))
    assert not clean.failures and not clean.gone
    expected = dump(quiet)
    quiet.dispose()

    faults = Faults(seed=seed, rate=rate, delay_s=0.8, retry_after_s=0)
    faulty = FakeBaseten(spec_for(seed), faults=faults)
    engine = archive_at(database_url)
    runs: list[str] = []
    for _ in range(1 + MAX_RERUNS):
        try:
            report = sync_once(engine, faulty)
        except ApiUnavailable as exc:  # the organisation listing itself gave up: exit 1, rerun
            runs.append(f"fatal: {exc}")
            continue
        runs.append(f"{len(report.failures)} failed")
        if not report.failures:
            break
    faulted = sum(1 for r in faulty.requests if r.status != 200)
    assert runs[-1] == "0 failed", runs
    assert dump(engine) == expected, f"runs: {runs}; {faulted} faulted answers"
    assert faulted > 0 or rate < 0.1  # the fault injection really happened
    engine.dispose()
