"""The real `archiver` command under secrets, signals and a database that goes away mid-run."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from archiver import db, migrate
from archiver.cli import cli
from archiver.errors import DatabaseUnavailable
from archiver.fake_api import FakeBaseten, Faults, OrgSpec, serve
from archiver.lock import LOCK_APPLICATION
from archiver.sync import SyncOptions, run_sync

from .support import fakes
from .support.archive_dump import dump, every_text
from .support.commands import Lines, Result, run_archiver, start_archiver, sync_env
from .support.databases import POSTGRES_URL, rows
from .support.waiting import wait_for

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
    assert not fakes.sync(engine, FakeBaseten(spec, api_key=KEY), key=KEY).failures
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
            "sync", "-vv", "--max-attempts", "1", env=sync_env("http://127.0.0.1:9", url, key=KEY)
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


def test_a_password_in_the_url_query_string_is_masked_too() -> None:
    """libpq takes `?password=...` as well as `user:password@`; the first was printed as is."""
    url = "postgresql://archiver@127.0.0.1:1/archive?sslmode=disable&password=s3cretpw"
    for args in (["query", "SELECT 1"], ["runs"], ["db", "current"]):
        result = CliRunner().invoke(cli, [*args, "--database-url", url])
        assert result.exit_code == 1, result.output
        assert "127.0.0.1" in result.output and "s3cretpw" not in result.output
    assert "s3cretpw" not in db.redact(url) and "sslmode=disable" in db.redact(url)


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
    return start_archiver("sync", "--concurrency", "2", env=sync_env(api_url, database_url, key=KEY))


def wait_for_checkpoint_requests(fake: FakeBaseten, count: int, process: subprocess.Popen[str]) -> None:
    """Wait until the run is well into fetching checkpoints (not a timing assertion: a trigger)."""
    wait_for(
        lambda: fake.request_count("/v1/training_projects/") - len(fake.project_ids()) >= count,
        f"{count} checkpoint requests",
        unless=lambda: process.poll() is not None,  # the sync ended before it could be interrupted
    )


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

    rerun = run_archiver("sync", env=sync_env(api_url, database_url, key=KEY))
    assert rerun.exit_code == 0, rerun.output
    assert runs(engine)[1] == ("succeeded", None)
    assert runs(engine)[0][0] == ("interrupted" if sig == signal.SIGTERM else "failed")
    assert_consistent(engine, fake)
    assert dump(engine) == clean_dump(SIGNAL_SPEC, new_database())


@pytest.mark.slow
def test_a_second_signal_stops_at_once_with_status_130(database_url: str, engine: Engine) -> None:
    """README: 130 for SIGINT/SIGTERM, and a second signal stops at once. The second signal used to
    end in Click's 'Aborted!' with exit status 1, which cron wrappers read as a fatal failure."""
    fake = FakeBaseten(OrgSpec(seed=5, projects=3, jobs_per_project=2), api_key=KEY, latency_ms=1500)
    with serve(fake) as url:
        process = start_sync(url, database_url)
        stderr = Lines(process.stderr)

        def ended() -> bool:
            return process.poll() is not None

        # The project list is in and job listings are in flight, each for 1.5 s: the run is busy.
        wait_for(lambda: fake.request_count() >= 1, "the project listing", unless=ended)
        wait_for(lambda: fake.in_flight >= 1, "the job listings", unless=ended)
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: stderr.has("received SIGTERM"), "the first signal to be handled", unless=ended)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 130, stderr.text()
    assert "Aborted" not in stderr.text() and "Traceback" not in stderr.text()
    assert rows(engine, "SELECT status FROM sync_runs") == [("interrupted",)]


# ------------------------------------------------------------------------------------------------
# the database goes away mid-run


def fail_over_before(fake: FakeBaseten, nth: int, admin_url: str, database: str) -> None:
    """Before the fake answers its `nth` checkpoints request, turn the database into a read-only
    replica: every connection is cut and every new one can only read, as after a failover gone wrong."""
    seen = 0
    guard = threading.Lock()

    def hook(method: str, path: str, body: bytes) -> None:
        nonlocal seen
        if path.endswith("/checkpoints"):
            with guard:
                seen += 1
                if seen == nth:
                    set_read_only(admin_url, database, True)

    fake.intercept(hook)


def set_read_only(admin_url: str, database: str, read_only: bool) -> None:
    admin = db.make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(
            f'ALTER DATABASE "{database}" SET default_transaction_read_only = {"on" if read_only else "off"}'
        )
        # As a failover does: every connection ends before the server answers again. One at a time,
        # each waited for (a signalled backend can commit for a few more milliseconds), and the sync
        # lock's holder last: were it first, a run's write could still commit and find the lock gone.
        backends = connection.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid() "
                "ORDER BY application_name = :holder"
            ),
            {"d": database, "holder": LOCK_APPLICATION},
        ).scalars()
        for pid in list(backends):
            connection.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
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
    fake = FakeBaseten(SPEC, api_key=KEY)
    fail_over_before(fake, 4, POSTGRES_URL, database)
    engine = db.make_engine(url)
    options = SyncOptions(concurrency=1, batch_rows=1)
    with fakes.client_for(fake, key=KEY) as client, pytest.raises(DatabaseUnavailable) as raised:
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
    fake.clear_overrides()
    assert not fakes.sync(engine, fake, key=KEY).failures
    assert [status for status, _ in runs(engine)] == ["failed", "succeeded"]
    assert dump(engine) == clean_dump(SPEC, new_database())
    engine.dispose()
