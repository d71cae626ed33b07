"""Time the archive can trust: a skewed clock is refused before anything is written, stamps never go
backwards, and `archiver check` names a run stamped in the future.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db
from archiver.errors import ClockSkew
from archiver.fake_api import serve

from .support.commands import run_archiver, sync_env
from .support.databases import rows, scalar
from .support.fakes import small_org, sync
from .support.times import utc

YEAR = timedelta(days=365)


def runs(engine: Engine) -> list[tuple[object, str, datetime | None, datetime | None]]:
    found = rows(engine, "SELECT id, status, started_at, finished_at FROM sync_runs ORDER BY id")
    return [(run_id, str(status), utc(started), utc(finished)) for run_id, status, started, finished in found]


def test_a_clock_a_year_ahead_is_refused_before_anything_is_written(database_url: str) -> None:
    fake = small_org(projects=2)
    engine = db.make_engine(database_url)
    try:
        with serve(fake) as url:
            env = sync_env(url, database_url)
            assert run_archiver("sync", env=env).exit_code == 0
            before = runs(engine)
            # The machine's clock a year ahead of the API's: its Date header a year behind the machine.
            fake.date = lambda: datetime.now(UTC) - YEAR
            fake.add_project(jobs=1, checkpoints_per_job=1)
            refused = run_archiver("sync", env=env)
            assert refused.exit_code == 2, refused.output
            assert refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1, refused.output
            line = refused.stderr
            this_year, last_year = datetime.now(UTC).year, (datetime.now(UTC) - YEAR).year
            assert re.search(rf"machine clock says {this_year}-\d\d-\d\dT", line), line
            assert re.search(rf"Date header says {last_year}-\d\d-\d\dT", line), line
            assert "--max-clock-skew 5 minutes" in line and "nothing was written" in line
            assert runs(engine) == before
            assert scalar(engine, "SELECT COUNT(*) FROM training_projects") == 2
            # Allowed a larger skew (from the environment, as cron would set it), the run goes ahead.
            allowed = run_archiver("sync", env={**env, "ARCHIVER_MAX_CLOCK_SKEW": "400d"})
            assert allowed.exit_code == 0, allowed.output
            assert scalar(engine, "SELECT COUNT(*) FROM training_projects") == 3
    finally:
        engine.dispose()


def test_a_first_run_on_a_skewed_clock_creates_nothing(database_url: str) -> None:
    fake = small_org()
    fake.date = lambda: datetime.now(UTC) + timedelta(minutes=6)
    with serve(fake) as url:
        refused = run_archiver("sync", env=sync_env(url, database_url))
    assert refused.exit_code == 2 and "6.0 minutes apart" in refused.stderr, refused.output
    engine = db.make_engine(database_url)
    try:
        assert "sync_runs" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_run_clock_is_compared_with_the_api_date_in_process(archive: Engine) -> None:
    fake = small_org()
    fake.date = lambda: datetime.now(UTC)
    with pytest.raises(ClockSkew, match="more than --max-clock-skew"):
        sync(archive, fake, clock=lambda: datetime.now(UTC) + YEAR)
    assert runs(archive) == [] and scalar(archive, "SELECT COUNT(*) FROM training_projects") == 0
    assert sync(archive, fake).exit_code == 0  # the machine's own clock agrees


def test_a_clock_two_days_back_never_ends_a_run_before_it_started(
    archive: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    fake = small_org()
    fake.date = lambda: datetime.now(UTC) + timedelta(days=2)  # the API and the machine agree, then...
    assert sync(archive, fake, clock=lambda: datetime.now(UTC) + timedelta(days=2)).exit_code == 0
    fake.date = lambda: datetime.now(UTC)  # ... both are set two days back
    with caplog.at_level(logging.WARNING, logger="archiver.sync"):
        assert sync(archive, fake, clock=lambda: datetime.now(UTC)).exit_code == 0
    (_, _, first_start, _), (_, _, start, end) = runs(archive)
    assert first_start is not None and start is not None and end is not None
    assert first_start < start <= end, runs(archive)  # stamps never go backwards
    assert "after this machine's clock" in caplog.text


def test_check_names_a_run_stamped_in_the_future(archive: Engine, database_url: str) -> None:
    fake = small_org()  # in-process, the fake sends no Date: nothing to check the clock against
    assert sync(archive, fake, clock=lambda: datetime.now(UTC) + YEAR).exit_code == 0
    check = run_archiver("check", "--database-url", database_url)
    assert check.exit_code == 4, check.output
    line = next(line for line in check.stdout.splitlines() if " clock:" in line)
    assert line.startswith("WARNING") and "run 1 is stamped" in line and "in the future" in line, line
    assert f"{(datetime.now(UTC) + YEAR).year}-" in line
    # A later run with a right clock is stamped after it (never backwards), and check still says why.
    assert sync(archive, fake).exit_code == 0
    (_, _, future_start, _), (_, _, start, end) = runs(archive)
    assert future_start is not None and start is not None and end is not None
    assert future_start < start <= end
    again = run_archiver("check", "--database-url", database_url)
    assert again.exit_code == 4 and "run 2 is stamped" in again.stdout, again.output
    # As of the present, the archive is what it was before the night stamped a year ahead: nothing yet.
    now = datetime.now(UTC).isoformat()
    as_of = run_archiver(
        "query", "--database-url", database_url, "--as-of", now, "SELECT COUNT(*) AS n FROM sync_runs"
    )
    assert as_of.exit_code == 0 and as_of.stdout.split() == ["n", "-", "0"], as_of.output
