"""`sync --metrics-file`: Prometheus textfile metrics after every run, however it ends."""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from archiver import ledger
from archiver.fake_api import FakeBaseten, OrgSpec, serve
from archiver.lock import sync_lock

from .support.commands import Result, run_archiver, start_archiver, sync_env
from .support.fakes import rate_limit_once
from .support.waiting import wait_for

SPEC = OrgSpec(seed=11, projects=2, jobs_per_project=3, checkpoints_per_job=2)
STATUSES = ("succeeded", "partial", "interrupted", "failed", "already_running")


@pytest.fixture
def served() -> Iterator[tuple[FakeBaseten, str]]:
    """The organisation served on loopback: the fake and its URL."""
    fake = FakeBaseten(SPEC)
    with serve(fake) as url:
        yield fake, url


@pytest.fixture
def metrics_file(tmp_path: Path) -> Path:
    (tmp_path / "textfile").mkdir()
    return tmp_path / "textfile" / "archiver.prom"


def sync(api_url: str, database_url: str, metrics_file: Path, *args: str, key: str | None = None) -> Result:
    env = sync_env(api_url, database_url) if key is None else sync_env(api_url, database_url, key)
    return run_archiver("sync", "--metrics-file", str(metrics_file), *args, env=env)


def metrics(path: Path) -> dict[str, float]:
    """The file read by Prometheus' own parser: every sample by `name{label=value}`; HELP and TYPE checked."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.name.startswith("archiver_") and family.documentation, family.name
        assert family.type in ("gauge", "counter"), family.name
        for sample in family.samples:
            # The naming guide: `_total` is a counter's suffix and no gauge's.
            assert sample.name.endswith("_total") == (family.type == "counter"), sample.name
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def status_of(samples: dict[str, float]) -> str:
    (status,) = [s for s in STATUSES if samples[f"archiver_last_run_status{{status={s}}}"] == 1]
    assert sum(samples[f"archiver_last_run_status{{status={s}}}"] for s in STATUSES) == 1
    return status


def test_a_successful_run_writes_every_metric(
    served: tuple[FakeBaseten, str], database_url: str, metrics_file: Path
) -> None:
    fake, api_url = served
    rate_limit_once(fake)
    before = time.time()
    result = sync(api_url, database_url, metrics_file)
    assert result.exit_code == 0, result.output
    found = metrics(metrics_file)
    assert status_of(found) == "succeeded" and found["archiver_last_run_exit_code"] == 0
    ended = found["archiver_last_run_timestamp_seconds"]
    assert before <= ended <= time.time()
    assert found["archiver_last_success_timestamp_seconds"] == ended
    assert 0 < found["archiver_last_run_duration_seconds"] <= time.time() - before
    total = fake.total_checkpoints()
    assert found["archiver_checkpoints_total{outcome=inserted}"] == total
    assert found["archiver_last_run_checkpoints{outcome=inserted}"] == total
    for outcome in ("updated", "unchanged", "deleted"):
        assert found[f"archiver_checkpoints_total{{outcome={outcome}}}"] == 0
    assert found["archiver_requests_total"] == fake.request_count()
    assert found["archiver_rate_limited_total"] == 1 and found["archiver_jobs_failed"] == 0
    # Readable by node_exporter's user; no temporary file left for the collector to trip on.
    assert stat.S_IMODE(metrics_file.stat().st_mode) == 0o644
    assert [path.name for path in metrics_file.parent.iterdir()] == ["archiver.prom"]


def test_a_failed_run_keeps_the_last_success_and_counters_add_up(
    served: tuple[FakeBaseten, str], database_url: str, metrics_file: Path
) -> None:
    fake, api_url = served
    assert sync(api_url, database_url, metrics_file).exit_code == 0
    first = metrics(metrics_file)
    assert sync(api_url, database_url, metrics_file, "--full").exit_code == 0
    second = metrics(metrics_file)
    total = fake.total_checkpoints()
    assert second["archiver_last_run_checkpoints{outcome=unchanged}"] == total
    assert second["archiver_checkpoints_total{outcome=unchanged}"] == total
    assert second["archiver_checkpoints_total{outcome=inserted}"] == total  # carried over from the first run
    assert second["archiver_requests_total"] == fake.request_count()

    refused = sync(api_url, database_url, metrics_file, key="wrong-key-8e21c4d0")
    assert refused.exit_code == 1
    third = metrics(metrics_file)
    assert status_of(third) == "failed" and third["archiver_last_run_exit_code"] == 1
    assert third["archiver_last_success_timestamp_seconds"] == second["archiver_last_run_timestamp_seconds"]
    assert third["archiver_last_run_timestamp_seconds"] > second["archiver_last_run_timestamp_seconds"]
    assert third["archiver_requests_total"] == second["archiver_requests_total"] + 1
    assert first["archiver_last_success_timestamp_seconds"] < third["archiver_last_success_timestamp_seconds"]


def test_without_a_previous_file_the_last_success_comes_from_the_ledger(
    served: tuple[FakeBaseten, str], database_url: str, engine: Engine, metrics_file: Path
) -> None:
    _fake, api_url = served
    assert run_archiver("sync", env=sync_env(api_url, database_url)).exit_code == 0
    with engine.connect() as connection:
        succeeded = ledger.last_success(connection)
    assert succeeded is not None
    assert sync(api_url, database_url, metrics_file, key="wrong-key-8e21c4d0").exit_code == 1
    found = metrics(metrics_file)
    assert status_of(found) == "failed"
    assert found["archiver_last_success_timestamp_seconds"] == pytest.approx(succeeded.timestamp(), abs=1e-3)


def test_a_run_that_found_another_running_says_so(
    served: tuple[FakeBaseten, str], database_url: str, engine: Engine, metrics_file: Path
) -> None:
    fake, api_url = served
    with sync_lock(engine):
        result = sync(api_url, database_url, metrics_file)
    assert result.exit_code == 75, result.output
    found = metrics(metrics_file)
    assert status_of(found) == "already_running" and found["archiver_last_run_exit_code"] == 75
    assert found["archiver_last_success_timestamp_seconds"] == 0  # none known: a freshness alert fires
    assert found["archiver_requests_total"] == 0 and fake.request_count() == 0


def test_an_interrupted_run_writes_its_metrics(database_url: str, metrics_file: Path) -> None:
    slow = FakeBaseten(OrgSpec(seed=5, projects=3, jobs_per_project=6, checkpoints_per_job=3), latency_ms=150)
    with serve(slow) as url:
        process = start_archiver(
            "sync", "--metrics-file", str(metrics_file), "--concurrency", "2", env=sync_env(url, database_url)
        )
        wait_for(  # well into fetching checkpoints: a trigger, not a timing assertion
            lambda: slow.request_count("/v1/training_projects/") - len(slow.project_ids()) >= 6,
            "six checkpoint requests",
            unless=lambda: process.poll() is not None,
        )
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    found = metrics(metrics_file)
    assert status_of(found) == "interrupted" and found["archiver_last_run_exit_code"] == 130
    assert 0 < found["archiver_last_run_checkpoints{outcome=inserted}"] < slow.total_checkpoints()


def test_a_metrics_file_in_a_missing_directory_is_a_usage_error(
    served: tuple[FakeBaseten, str], database_url: str, tmp_path: Path
) -> None:
    fake, api_url = served
    result = sync(api_url, database_url, tmp_path / "no-such-dir" / "archiver.prom")
    assert result.exit_code == 2 and "--metrics-file" in result.stderr
    assert fake.request_count() == 0


def test_a_metrics_file_that_cannot_be_written_makes_check_warn(
    served: tuple[FakeBaseten, str], database_url: str, metrics_file: Path
) -> None:
    _fake, api_url = served
    unwritable = Path("/proc/archiver.prom")  # a directory no one, root included, can create a file in
    with pytest.raises(OSError) as refused:
        tempfile.mkstemp(dir=unwritable.parent)
    result = sync(api_url, database_url, unwritable)
    assert result.exit_code == 0, result.output
    said = f"could not write the metrics file {unwritable}: {refused.value.strerror}"
    assert said in result.stderr, result.stderr
    check = run_archiver("check", "--database-url", database_url)
    assert check.exit_code == 4, check.output
    (warning,) = [line for line in check.stdout.splitlines() if line.startswith("WARNING")]
    assert warning.startswith("WARNING metrics: run ") and said in warning, warning
    # The next run that writes its file turns the check green again.
    assert sync(api_url, database_url, metrics_file).exit_code == 0
    again = run_archiver("check", "--database-url", database_url)
    assert again.exit_code == 0 and "OK      metrics" in again.stdout, again.output


def test_a_nan_in_the_previous_file_is_not_carried_forward(
    served: tuple[FakeBaseten, str], database_url: str, metrics_file: Path
) -> None:
    _, url = served
    metrics_file.write_text(
        'archiver_requests_total NaN\narchiver_checkpoints_total{outcome="inserted"} +Inf\n'
    )
    result = sync(url, database_url, metrics_file)
    assert result.exit_code == 0, result.output
    samples = metrics(metrics_file)
    assert all(value == value and abs(value) != float("inf") for value in samples.values()), samples
    assert samples["archiver_requests_total"] > 0


def test_a_metrics_path_that_is_not_a_regular_file_is_left_alone(
    served: tuple[FakeBaseten, str], database_url: str, metrics_file: Path
) -> None:
    """A device node or FIFO at the path is someone else's: it was read (hanging on a FIFO) and replaced."""
    _, url = served
    os.mkfifo(metrics_file)
    result = run_archiver(
        "sync", "--metrics-file", str(metrics_file), env=sync_env(url, database_url), timeout=60
    )
    assert result.exit_code == 0, result.output  # the archive was written; the metrics say why not
    assert "not a regular file" in result.stderr and "Traceback" not in result.output
    assert stat.S_ISFIFO(metrics_file.stat().st_mode)
