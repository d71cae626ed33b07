"""The real `archiver` command under secrets, signals and a database that goes away mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, migrate
from archiver.client import BasetenClient, RetryPolicy
from archiver.errors import DatabaseUnavailable
from archiver.fake_api import FakeBaseten, Faults, OrgSpec, serve
from archiver.sync import SyncOptions, run_sync

from .archive_dump import dump, every_text
from .conftest import POSTGRES_URL, Result, archiver_command, run_archiver

KEY = "sk-live-7f3a9c-never-print-me"
PASSWORD = "pw-4b8e-never-print-me"
SPEC = OrgSpec(seed=11, projects=2, jobs_per_project=3, checkpoints_per_job=3)


def with_password(database_url: str) -> str:
    """The URL with a password: PostgreSQL's trust auth accepts any, SQLite URLs carry none."""
    if not database_url.startswith("postgresql"):
        return database_url
    return sa.make_url(database_url).set(password=PASSWORD).render_as_string(hide_password=False)


def clean_dump(spec: OrgSpec, url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    with serve(FakeBaseten(spec, api_key=KEY)) as api, BasetenClient(KEY, api, max_rps=1000) as client:
        assert not run_sync(engine, client).failures
    try:
        return dump(engine)
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------------
# secrets


def sync_with_key_file(api_url: str, database_url: str, key_file: Path, *args: str) -> Result:
    return run_archiver(
        "sync",
        "--api-key-file",
        str(key_file),
        "--max-attempts",
        "2",
        *args,
        env={"BASETEN_API_URL": api_url, "ARCHIVER_DATABASE_URL": database_url},
    )


def test_the_key_and_the_password_appear_nowhere(database_url: str, engine: Engine, tmp_path: Path) -> None:
    url = with_password(database_url)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    broken = FakeBaseten(SPEC).job_ids()[1]
    outputs: list[Result] = []

    # Success and a partial run (one malformed job), at every verbosity and in JSON.
    fake = FakeBaseten(SPEC, api_key=KEY, faults=Faults(broken_jobs={broken: "not-json"}))
    with serve(fake) as api:
        for args in [(), ("-v",), ("-vv",), ("-vv", "--log-format", "json")]:
            outputs.append(result := sync_with_key_file(api, url, key_file, *args))
            assert result.exit_code == 3, result.output
    assert "not valid JSON" in outputs[0].stderr and broken in outputs[0].stderr

    # The key refused (the fake wants another one).
    with serve(FakeBaseten(SPEC, api_key="another-key")) as api:
        outputs.append(result := sync_with_key_file(api, url, key_file, "-vv"))
        assert result.exit_code == 1 and "refused the API key" in result.stderr

    # 5xx until the client gives up, on the organisation listing: fatal.
    with serve(FakeBaseten(SPEC, api_key=KEY, faults=Faults(rate=1.0, kinds=("503",)))) as api:
        outputs.append(result := sync_with_key_file(api, url, key_file, "-vv", "--log-format", "json"))
        assert result.exit_code == 1 and "cannot list training projects" in result.stderr

    # The key in the environment instead of a file, with the API gone entirely.
    outputs.append(
        result := run_archiver(
            "sync",
            "-vv",
            "--max-attempts",
            "1",
            env={
                "BASETEN_API_URL": "http://127.0.0.1:9",
                "BASETEN_API_KEY": KEY,
                "ARCHIVER_DATABASE_URL": url,
            },
        )
    )
    assert result.exit_code == 1

    # The database unreachable, password in its URL.
    if url.startswith("postgresql"):
        unreachable = sa.make_url(url).set(port=9).render_as_string(hide_password=False)
        outputs.append(result := sync_with_key_file("http://127.0.0.1:9", unreachable, key_file, "-vv"))
        assert result.exit_code == 1 and "cannot connect to the database" in result.stderr
        outputs.append(run_archiver("db", "current", env={"ARCHIVER_DATABASE_URL": unreachable}))

    for result in outputs:
        assert KEY not in result.output and PASSWORD not in result.output, result.output
    statuses = [status for status, _ in runs(engine)]
    assert statuses[:4] == ["partial"] * 4 and "failed" in statuses[4:]
    assert ("partial", "malformed") in runs(engine)
    archived = every_text(engine)
    assert "checkpoint-" in archived  # the dump really holds the archive
    assert KEY not in archived and PASSWORD not in archived


# ------------------------------------------------------------------------------------------------
# signals


@pytest.fixture
def slow_fake() -> Iterator[tuple[FakeBaseten, str]]:
    """An organisation whose sync takes a few seconds: every answer is 150 ms late."""
    fake = FakeBaseten(SIGNAL_SPEC, api_key=KEY, latency_ms=150)
    with serve(fake) as url:
        yield fake, url


SIGNAL_SPEC = OrgSpec(seed=5, projects=3, jobs_per_project=6, checkpoints_per_job=3)


def start_sync(api_url: str, database_url: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "BASETEN_API_URL": api_url,
        "BASETEN_API_KEY": KEY,
        "ARCHIVER_DATABASE_URL": database_url,
    }
    return subprocess.Popen(
        [*archiver_command(), "sync", "--concurrency", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def wait_for_checkpoint_requests(fake: FakeBaseten, count: int, process: subprocess.Popen[str]) -> None:
    """Wait until the run is well into fetching checkpoints (not a timing assertion: a trigger)."""
    deadline = time.monotonic() + 60
    while fake.request_count("/v1/training_projects/") - len(fake.project_ids()) < count:
        assert process.poll() is None, "the sync ended before it could be interrupted"
        assert time.monotonic() < deadline, "the sync never got going"
        time.sleep(0.02)


def runs(engine: Engine) -> list[tuple[str, str | None]]:
    """Each run's status, and its first sync_errors kind, oldest first."""
    with engine.connect() as connection:
        return [
            (status, kind)
            for status, kind in connection.execute(
                sa.text(
                    "SELECT r.status, (SELECT MIN(e.kind) FROM sync_errors e WHERE e.sync_run_id = r.id) "
                    "FROM sync_runs r ORDER BY r.id"
                )
            )
        ]


def assert_consistent(engine: Engine, fake: FakeBaseten) -> None:
    """Every archived job has all of its checkpoints or none, each as served; no duplicates."""
    with engine.connect() as connection:
        found = connection.execute(
            sa.text("SELECT training_job_id, checkpoint_id, size_bytes FROM checkpoints")
        ).all()
    by_job: dict[str, set[tuple[str, int]]] = {}
    for job_id, checkpoint_id, size in found:
        by_job.setdefault(job_id, set()).add((checkpoint_id, size))
    assert sum(len(v) for v in by_job.values()) == len(found)
    for job_id, archived in by_job.items():
        assert archived == {(c["checkpoint_id"], c["size_bytes"]) for c in fake.checkpoints(job_id)}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_mid_run_leaves_a_consistent_archive_that_a_rerun_completes(
    sig: signal.Signals,
    slow_fake: tuple[FakeBaseten, str],
    database_url: str,
    engine: Engine,
    new_database: Callable[[], str],
) -> None:
    fake, api_url = slow_fake
    process = start_sync(api_url, database_url)
    wait_for_checkpoint_requests(fake, 6, process)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert process.returncode == 130, stderr
        assert "Interrupted before the end" in stdout and "rerun to finish" in stdout
        assert runs(engine) == [("interrupted", None)]
    else:
        assert process.returncode == -signal.SIGKILL
        assert runs(engine) == [("running", None)]  # until the next run finds it dead
    assert_consistent(engine, fake)
    archived = len(engine.connect().execute(sa.text("SELECT 1 FROM checkpoints")).all())
    assert archived < fake.total_checkpoints()  # it really stopped part-way

    rerun = run_archiver(
        "sync",
        env={"BASETEN_API_URL": api_url, "BASETEN_API_KEY": KEY, "ARCHIVER_DATABASE_URL": database_url},
    )
    assert rerun.exit_code == 0, rerun.output
    assert runs(engine)[1] == ("succeeded", None)
    assert runs(engine)[0][0] == ("interrupted" if sig == signal.SIGTERM else "failed")
    assert_consistent(engine, fake)
    assert dump(engine) == clean_dump(SIGNAL_SPEC, new_database())


# ------------------------------------------------------------------------------------------------
# the database goes away mid-run


class FailoverFake(FakeBaseten):
    """Before answering the n-th checkpoints request, turn the database into a read-only replica:
    every connection is cut and every new one can only read, as after a failover gone wrong."""

    def __init__(self, spec: OrgSpec, admin_url: str, database: str, after: int) -> None:
        super().__init__(spec, api_key=KEY)
        self._admin_url, self._database, self._after = admin_url, database, after
        self._seen = 0
        self._guard = threading.Lock()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def, override]
        if path.endswith("/checkpoints"):
            with self._guard:
                self._seen += 1
                if self._seen == self._after:
                    set_read_only(self._admin_url, self._database, True)
        return super().handle(method, path, headers, body)


def set_read_only(admin_url: str, database: str, read_only: bool) -> None:
    admin = db.make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(
            f'ALTER DATABASE "{database}" SET default_transaction_read_only = {"on" if read_only else "off"}'
        )
        connection.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": database},
        )
    admin.dispose()


def test_a_database_lost_mid_run_fails_the_run_and_keeps_what_was_committed(
    postgres_url: str, new_database: Callable[[], str]
) -> None:
    # PostgreSQL only: it is the database whose connections can be cut mid-run.
    url = with_password(postgres_url)
    database = sa.make_url(url).database
    assert database
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()

    assert POSTGRES_URL
    fake = FailoverFake(SPEC, POSTGRES_URL, database, after=4)
    engine = db.make_engine(url)
    options = SyncOptions(concurrency=1, batch_rows=1)
    with (
        serve(fake) as api,
        BasetenClient(KEY, api, max_rps=1000, retry=RetryPolicy(attempts=1)) as client,
        pytest.raises(DatabaseUnavailable) as raised,
    ):
        run_sync(engine, client, options)
    engine.dispose()
    message = str(raised.value)
    assert "rerun to finish" in message and PASSWORD not in message and KEY not in message

    set_read_only(POSTGRES_URL, database, False)
    engine = db.make_engine(url)
    with engine.connect() as connection:
        jobs = connection.execute(sa.text("SELECT COUNT(*) FROM training_jobs")).scalar_one()
    assert jobs == len(fake.job_ids())  # the listings were committed before the failover
    assert_consistent(engine, fake)  # and whole jobs only
    with serve(fake) as api, BasetenClient(KEY, api, max_rps=1000) as client:
        assert not run_sync(engine, client).failures
    assert [status for status, _ in runs(engine)] == ["failed", "succeeded"]
    assert dump(engine) == clean_dump(SPEC, new_database())
    engine.dispose()
