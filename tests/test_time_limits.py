"""A run is bounded: in time (a deadline per request that includes the body, --max-run-time, a budget
for 429 waits), in size (--max-response-mb), and by signals, which stop it whatever it is doing."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec, Response, serve

from .support.commands import Lines, Result, archiver_command, run_archiver, start_archiver, sync_env
from .support.databases import rows
from .support.waiting import GENEROUS_S, wait_for

SPEC = OrgSpec(seed=21, projects=1, jobs_per_project=4, checkpoints_per_job=3)
QUICK = ("--max-rps", "1000", "--concurrency", "2")


def checkpoints_path(fake: FakeBaseten, job_id: str) -> str:
    project_id = next(p for p in fake.project_ids() if job_id in fake.job_ids(p))
    return f"/v1/training_projects/{project_id}/jobs/{job_id}/checkpoints"


def drip_checkpoints(fake: FakeBaseten, job_id: str, answer: Response) -> str:
    """Answer `job_id`'s checkpoint listing with `answer` (a dripping one); return the path."""
    path = checkpoints_path(fake, job_id)
    fake.intercept(lambda _method, requested, _body: answer if requested == path else None)
    return path


def archived_jobs(engine: Engine) -> set[object]:
    """The jobs whose checkpoint listings were read and committed."""
    return {
        job
        for (job,) in rows(engine, "SELECT id FROM training_jobs WHERE checkpoints_fetched_at IS NOT NULL")
    }


def run_and_errors(engine: Engine) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    return (
        rows(engine, "SELECT status FROM sync_runs"),
        rows(engine, "SELECT kind, job_id, message FROM sync_errors ORDER BY id"),
    )


# ------------------------------------------------------------------------------------------------
# a deadline for the whole response, body included


TRICKLE = Response.of(200, b" " * 10_000).dripped("trickle", drip_s=0.1)  # 1,000 s at this pace
ENDLESS = Response.of(200, b"[1]").dripped("endless", drip_s=0.1)
# Each byte of a header reset httpx's read timeout: 5,000 bytes of it kept one try open for 500 s.
SLOW_HEADERS = Response.of(200, b"[]", headers={"X-Pad": "a" * 5_000}).dripped("slow-headers", drip_s=0.1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "answer", [TRICKLE, ENDLESS, SLOW_HEADERS], ids=["trickle", "endless", "slow-headers"]
)
def test_a_body_that_trickles_or_never_ends_fails_its_job_at_the_deadline(
    answer: Response, database_url: str, engine: Engine
) -> None:
    """httpx's timeout is per read: a byte every tenth of a second never met it, and the run hung."""
    fake = FakeBaseten(SPEC)
    slow_job = fake.job_ids()[0]
    path = drip_checkpoints(fake, slow_job, answer)
    with serve(fake) as url:
        result = run_archiver(
            "sync", "--timeout", "1", "--max-attempts", "2", *QUICK, env=sync_env(url, database_url)
        )
    assert result.exit_code == 3, result.output
    assert f"job {slow_job}: no whole response within 1s (--timeout) on GET {path}" in result.stderr
    assert "gave up after 2 attempts" in result.stderr
    assert fake.request_count(path) == 2  # retried per the policy
    assert archived_jobs(engine) == set(fake.job_ids()) - {slow_job}
    statuses, errors = run_and_errors(engine)
    assert statuses == [("partial",)]
    assert [(kind, job) for kind, job, _ in errors] == [("api", slow_job)]


# ------------------------------------------------------------------------------------------------
# --max-response-mb


@pytest.mark.slow
@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "counted"])
def test_a_response_larger_than_max_response_mb_fails_its_job(
    announced: bool, database_url: str, engine: Engine
) -> None:
    fake = FakeBaseten(OrgSpec(projects=0))
    big_job, other_job = (fake.job_ids(fake.add_project(checkpoints_per_job=n))[0] for n in (6_000, 3))
    if not announced:  # chunked, no Content-Length: only counting the bytes as they arrive finds it too large
        drip_checkpoints(fake, big_job, Response.of(200, b" " * 65_536).dripped("endless", drip_s=0.001))
    with serve(fake) as url:
        result = run_archiver("sync", "--max-response-mb", "1", *QUICK, env=sync_env(url, database_url))
    assert result.exit_code == 3, result.output
    how = "it announces" if announced else "more than 1,048,576 bytes arrived"
    assert (
        f"job {big_job}: GET {checkpoints_path(fake, big_job)}: the response is larger than " in result.stderr
    )
    assert f"--max-response-mb 1 ({how}" in result.stderr
    assert big_job not in archived_jobs(engine) and other_job in archived_jobs(engine)
    statuses, errors = run_and_errors(engine)
    assert statuses == [("partial",)] and [(kind, job) for kind, job, _ in errors] == [("api", big_job)]


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compression_bomb_is_stopped_at_max_response_mb_as_decoded(
    encoding: str, database_url: str, engine: Engine
) -> None:
    """The limit counted bytes on the wire: 0.75 MiB of gzip inflated to 768 MiB and was kept whole."""
    fake = FakeBaseten(SPEC)
    bomb_job = fake.job_ids()[0]
    spaces = b" " * (64 * 1024 * 1024)  # 64 MiB of JSON whitespace: 65 KB on the wire
    wire = gzip.compress(spaces, 9) if encoding == "gzip" else zlib.compress(spaces, 9)
    assert len(wire) < 1024 * 1024
    bomb = Response.of(200, wire, headers={"Content-Encoding": encoding})
    path = drip_checkpoints(fake, bomb_job, bomb)
    with serve(fake) as url:
        result = run_archiver("sync", "--max-response-mb", "16", *QUICK, env=sync_env(url, database_url))
    assert result.exit_code == 3, result.output
    assert f"job {bomb_job}: GET {path}: the response is larger than --max-response-mb 16" in result.stderr
    assert archived_jobs(engine) == set(fake.job_ids()) - {bomb_job}
    largest = rows(engine, "SELECT MAX(size_bytes) FROM api_response_bodies")[0][0]
    assert isinstance(largest, int) and largest < 1024 * 1024


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw deflate"])
def test_a_compressed_listing_is_archived_as_decoded(
    encoding: str, database_url: str, engine: Engine
) -> None:
    """Bodies are decompressed by the archiver itself now: every encoding it asks for still reads."""
    fake = FakeBaseten(SPEC)
    job_id = fake.job_ids()[0]
    body = json.dumps({"training_job": fake.job(job_id), "checkpoints": fake.checkpoints(job_id)}).encode()
    if encoding == "gzip":
        wire = gzip.compress(body)
    else:
        packer = zlib.compressobj(wbits=zlib.MAX_WBITS if encoding == "deflate" else -zlib.MAX_WBITS)
        wire = packer.compress(body) + packer.flush()
    fake.override(
        "GET", checkpoints_path(fake, job_id), body=wire, headers={"Content-Encoding": encoding.split()[-1]}
    )
    with serve(fake) as url:
        result = run_archiver("sync", *QUICK, env=sync_env(url, database_url))
    assert result.exit_code == 0, result.output
    archived = rows(engine, "SELECT checkpoint_id FROM checkpoints WHERE training_job_id = :j", j=job_id)
    assert sorted(str(c) for (c,) in archived) == sorted(c["checkpoint_id"] for c in fake.checkpoints(job_id))


# ------------------------------------------------------------------------------------------------
# --max-rate-limited-time and --max-run-time


def assert_stopped_early(result: Result, engine: Engine, cause: str) -> None:
    """Exit 3, the cause in the summary and in sync_errors, the run recorded as partial."""
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.stderr
    assert f"Stopped early: {cause}; what is complete was committed, rerun to finish." in result.stdout
    statuses, errors = run_and_errors(engine)
    assert statuses == [("partial",)] and [(kind, m) for kind, _, m in errors] == [("limit", cause)]


def rate_limit_after(fake: FakeBaseten, allowed: int) -> None:
    """Let `allowed` requests through, then answer every one with 429 and Retry-After: 1."""
    seen: list[str] = []
    guard = threading.Lock()
    storm = Response.of(429, {"error": "slow down"}, headers={"Retry-After": "1"})

    def hook(_method: str, path: str, _body: bytes) -> Response | None:
        with guard:
            seen.append(path)
            return storm if len(seen) > allowed else None

    fake.intercept(hook)


@pytest.mark.slow
def test_a_429_storm_longer_than_max_rate_limited_time_stops_the_run_as_partial(
    database_url: str, engine: Engine
) -> None:
    """2,000 jobs under Retry-After: 60 used to take ten hours, blocking the nights after."""
    fake = FakeBaseten(SPEC)
    rate_limit_after(fake, 3)  # the project list, its job list and one job's checkpoints
    with serve(fake) as url:
        result = run_archiver(
            "sync",
            "--max-rate-limited-time",
            "2s",
            "--max-attempts",
            "100",
            "--concurrency",
            "1",
            env=sync_env(url, database_url),
        )
    cause = "the API rate-limited this run (HTTP 429) for more than 2 seconds (--max-rate-limited-time)"
    assert_stopped_early(result, engine, cause)
    assert len(archived_jobs(engine)) == 1  # what was fetched is committed


@pytest.mark.slow
def test_a_run_longer_than_max_run_time_stops_as_partial_with_its_work_committed(
    database_url: str, engine: Engine
) -> None:
    fake = FakeBaseten(OrgSpec(seed=23, projects=1, jobs_per_project=30), latency_ms=200)
    with serve(fake) as url:
        result = run_archiver(
            "sync",
            "--max-run-time",
            "1s",
            "--concurrency",
            "1",
            "--log-format",
            "json",
            env=sync_env(url, database_url),
        )
    assert all(line.startswith("{") for line in result.output.splitlines())  # JSON, every line
    assert_stopped_early(result, engine, "the run went on for longer than 1 second (--max-run-time)")
    assert len(archived_jobs(engine)) < 30


# ------------------------------------------------------------------------------------------------
# signals, from the first moment to the last

SIGNALS = [signal.SIGTERM, signal.SIGINT]


def handles_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (the kernel's SigCgt mask): it is running our code."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def keep_signalling(process: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Send `sig` again and again until the process ends (each send a prompt to stop, however early)."""
    while process.poll() is None:
        process.send_signal(sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)


def assert_stopped_cleanly(returncode: int, stderr: str) -> None:
    assert returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr, stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_in_the_first_moments_exits_130_without_a_traceback(
    sig: signal.Signals, database_url: str, engine: Engine
) -> None:
    """It used to exit -15 (SIGTERM) or with a KeyboardInterrupt traceback while still importing."""
    with serve(FakeBaseten(SPEC)) as url:
        process = start_archiver("sync", env=sync_env(url, database_url))
        wait_for(lambda: process.poll() is not None or handles_sigterm(process.pid), "the handler")
        keep_signalling(process, sig)
        _, stderr = process.communicate(timeout=GENEROUS_S)
    assert_stopped_cleanly(process.returncode, stderr)
    if sa.inspect(engine).has_table("sync_runs"):
        assert {status for (status,) in rows(engine, "SELECT status FROM sync_runs")} <= {"interrupted"}


def test_a_sigint_while_the_console_script_loads_ends_the_process_without_a_traceback() -> None:
    """From the console script's first line until `main` takes signals, SIGINT has its default action.

    Python's own handler was in place while the entry point imported its modules: a SIGINT then
    printed a KeyboardInterrupt traceback (about 1 in 25 signals sent in the first 60 ms, measured).
    """
    code = "import os, signal, archiver.entry; os.kill(os.getpid(), signal.SIGINT); print('went on')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GENEROUS_S)
    assert (result.returncode, result.stdout, result.stderr) == (-signal.SIGINT, "", "")


@contextmanager
def full_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose buffer is already full: a process writing to it waits until the other end reads."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"." * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    try:
        yield read_end, write_end
    finally:
        os.close(read_end)


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_after_the_run_while_it_reports_exits_130_with_the_work_committed(
    sig: signal.Signals, database_url: str, engine: Engine
) -> None:
    """It used to exit -15: the run's handler was gone, and the default one killed the process."""
    fake = FakeBaseten(SPEC)
    with serve(fake) as url, full_pipe() as (read_end, write_end):
        process = subprocess.Popen(
            [*archiver_command(), "sync"],
            env={**os.environ, **sync_env(url, database_url)},
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        os.close(write_end)
        # The run has recorded its end; its summary waits for room in the pipe.
        wait_for(
            lambda: (
                sa.inspect(engine).has_table("sync_runs")
                and rows(engine, "SELECT status FROM sync_runs") == [("succeeded",)]
            ),
            "the run to record its end",
            unless=lambda: process.poll() is not None,
        )
        process.send_signal(sig)
        with os.fdopen(read_end, "rb", closefd=False) as reader:
            stdout = reader.read().decode()  # room in the pipe: the summary goes out, then the process ends
        _, stderr = process.communicate(timeout=GENEROUS_S)
    assert_stopped_cleanly(process.returncode, stderr)
    assert "Archived 1 projects and 4 jobs" in stdout
    assert f"received {sig.name} as the command ended; its work is complete" in stderr
    assert archived_jobs(engine) == set(fake.job_ids())


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_while_a_response_trickles_stops_the_run_at_once(
    sig: signal.Signals, database_url: str, engine: Engine
) -> None:
    """The run used to wait for the trickle, for as long as it lasted; a second signal did nothing either."""
    fake = FakeBaseten(SPEC)
    slow_job = fake.job_ids()[0]
    path = drip_checkpoints(fake, slow_job, TRICKLE)
    with serve(fake) as url:
        process = start_archiver("sync", "--concurrency", "1", env=sync_env(url, database_url))
        stderr = Lines(process.stderr)
        wait_for(
            lambda: fake.request_count(path) == 1, "the trickle", unless=lambda: process.poll() is not None
        )
        process.send_signal(sig)
        process.wait(timeout=GENEROUS_S)  # the trickle alone would take 1,000 s
    assert_stopped_cleanly(process.returncode, stderr.text())
    assert rows(engine, "SELECT status FROM sync_runs") == [("interrupted",)]
    assert slow_job not in archived_jobs(engine)


def test_a_long_retry_after_on_one_request_defers_only_that_job(database_url: str, engine: Engine) -> None:
    """One Retry-After: 3600 stopped the whole run after 1 s, 0 jobs archived, "rate-limited for 30 minutes"."""
    fake = FakeBaseten(SPEC)
    held = fake.job_ids()[1]
    project = fake.job(held)["training_project_id"]
    hours = Response.of(429, {"error": "slow down"}, headers={"Retry-After": "3600"})

    def hook(_method: str, path: str, _body: bytes) -> Response | None:
        return (
            hours
            if path.split("?")[0] == f"/v1/training_projects/{project}/jobs/{held}/checkpoints"
            else None
        )

    fake.intercept(hook)
    with serve(fake) as url:
        result = run_archiver("sync", env=sync_env(url, database_url), timeout=60)
    assert result.exit_code == 3, result.output
    assert archived_jobs(engine) == set(fake.job_ids()) - {held}
    assert (
        "asked to wait 1 hour (Retry-After)" in result.stderr and "deferred to the next run" in result.stderr
    )
    assert "more than 30 minutes" not in result.output
    _, errors = run_and_errors(engine)
    assert [(kind, job) for kind, job, _ in errors] == [("deferred", held)]
