"""What a sync does for PostgreSQL where autovacuum does not, or not yet: vacuum the tables the nights churn, analyze the large ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, facts, migrate, upkeep
from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.sync import SyncOptions

from .support import fakes

STATS = "SELECT n_live_tup, n_dead_tup, last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'job_facts'"


def counted(engine: Engine, enough: Callable[[tuple[Any, ...]], bool]) -> tuple[Any, ...]:
    """`job_facts`' live and dead rows and whether it was vacuumed, once the server's counters say `enough`."""
    engine.dispose()  # a backend that ends reports what it changed
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as connection:
            found = tuple(connection.exec_driver_sql(STATS).one())
        if enough(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_table_that_autovacuum_leaves_alone_is_vacuumed_once_a_fifth_of_its_rows_are_dead(
    postgres_url: str,
) -> None:
    engine = db.make_engine(postgres_url)
    migrate.upgrade(engine)
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=300, checkpoints_per_job=1, active_fraction=0))
    assert fakes.sync(engine, fake).exit_code == 0
    with engine.begin() as connection:  # autovacuum off for this table, whatever the server's setting
        connection.exec_driver_sql("ALTER TABLE job_facts SET (autovacuum_enabled = false)")
    assert "public.job_facts" not in upkeep.vacuum(engine)  # a first load leaves few dead rows
    with engine.begin() as connection:  # as two nights that bring every job's hours to now
        for _ in range(2):
            connection.exec_driver_sql("UPDATE job_facts SET hours_in_status = hours_in_status")
    # Both counts: the first load's rows come from another backend, which reports them as it ends.
    live, dead, vacuumed = counted(engine, lambda found: found[0] >= 600 and found[1] >= 1200)
    assert (live, dead, vacuumed) == (600, 1200, False)
    assert fakes.sync(engine, fake).exit_code == 0  # the run vacuums it at its end
    live, dead, vacuumed = counted(engine, lambda found: found[2])
    assert vacuumed and live == 600 and dead <= 600  # (its own night's rows, if counted by then)
    with engine.begin() as connection:  # a table autovacuum looks after is left to it
        connection.exec_driver_sql("ALTER TABLE job_facts RESET (autovacuum_enabled)")
        on = connection.exec_driver_sql("SHOW autovacuum").scalar_one() == "on"
        for _ in range(3):
            connection.exec_driver_sql("UPDATE job_facts SET hours_in_status = hours_in_status")
    counted(engine, lambda found: found[1] >= 1800)
    assert ("public.job_facts" in upkeep.vacuum(engine)) is not on
    engine.dispose()


def test_nothing_is_vacuumed_on_sqlite(tmp_path: Any) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'archive.db'}")
    migrate.upgrade(engine)
    assert upkeep.vacuum(engine) == []
    engine.dispose()


def test_a_database_that_cannot_be_reached_for_upkeep_does_not_fail_the_run() -> None:
    unreachable = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/archive")
    assert upkeep.vacuum(unreachable) == []


def test_the_archives_writes_are_planned_without_jit_compilation_and_readers_keep_the_servers(
    postgres_url: str,
) -> None:
    """JIT compiling took 0.3-1.2 s a statement of the facts refresh, which then ran in 0.05-0.3 s: a
    sync's sessions turn it off. An analyst's `archiver query` keeps whatever the server sets."""
    with db.make_engine(postgres_url, reading=True).connect() as connection:
        database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
    with sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as connection:
        for setting in ("jit = on", "jit_above_cost = 0"):  # every statement compiled, where JIT is on
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" SET {setting}')
    writer, reader = db.make_engine(postgres_url), db.make_engine(postgres_url, reading=True)
    migrate.upgrade(writer)
    assert fakes.sync(writer, FakeBaseten(OrgSpec(projects=1, jobs_per_project=1))).exit_code == 0
    for engine, jit in ((writer, "off"), (reader, "on")):
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW jit").scalar_one() == jit
            available = connection.exec_driver_sql("SELECT pg_jit_available()").scalar_one()
            query = "EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM project_storage_daily_live"
            (plan,) = connection.exec_driver_sql(query).scalar_one()
            assert ("JIT" in plan) == (available and jit == "on"), plan.keys()


LARGE_TABLES = ("public.checkpoint_facts", "public.checkpoints", "archiver_internal.checkpoint_history")


def analyzed_by_thread(engine: Engine) -> dict[str, list[str]]:
    """The tables each thread names in the `ANALYZE` statements it runs on `engine`, from now on."""
    found: dict[str, list[str]] = {}

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.startswith("ANALYZE "):
            found.setdefault(threading.current_thread().name, []).extend(statement[8:].split(", "))

    sa.event.listen(engine, "before_cursor_execute", note)
    return found


def without_statistics(engine: Engine) -> None:
    """Forget when the large tables were analyzed, as for tables never analyzed (the server's counters
    come in up to seconds late: a run this short would otherwise finish before they say it wrote them)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as connection:
        for table in LARGE_TABLES:
            connection.exec_driver_sql(f"SELECT pg_stat_reset_single_table_counters('{table}'::regclass)")


def test_a_first_load_analyzes_the_large_tables_while_it_writes_its_last_jobs_not_after(
    archive: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_statistics(archive)
    analyzed = analyzed_by_thread(archive)
    left: list[frozenset[str]] = []
    refresh = facts.refresh

    def refreshed(connection: sa.Connection, **options: Any) -> None:
        left.append(frozenset(options.get("analyzed", ())))
        refresh(connection, **options)

    monkeypatch.setattr(facts, "refresh", refreshed)
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=30, checkpoints_per_job=50, active_fraction=0))
    report = fakes.sync(archive, fake, SyncOptions(batch_rows=200))
    assert report.exit_code == 0 and report.counts.checkpoints_inserted > 2000
    if archive.dialect.name == "sqlite":
        assert analyzed == {} and left == [frozenset()]  # SQLite's planner needs none of it
        return
    ahead = analyzed.pop("analyze-ahead")
    assert ahead == sorted(LARGE_TABLES)
    assert left == [{"checkpoint_facts", "checkpoints", "checkpoint_history"}]  # the refresh leaves them
    at_the_end = [table for tables in analyzed.values() for table in tables]
    assert at_the_end and not set(at_the_end) & set(LARGE_TABLES)  # the small ones, as every night


def test_a_first_load_is_counted_before_its_analysis_ahead_so_the_next_night_analyzes_no_large_table(
    postgres_url: str,
) -> None:
    """Counted as each batch commits: otherwise what the writer changed in its last second before the
    `ANALYZE` ahead reached the server's counters after it, as if changed since, and the next night,
    unchanged, analyzed the large tables again."""
    archive = db.make_engine(postgres_url)
    migrate.upgrade(archive)
    without_statistics(archive)
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=30, checkpoints_per_job=50, active_fraction=0))
    first = fakes.sync(archive, fake, SyncOptions(batch_rows=200))
    assert first.exit_code == 0 and first.counts.checkpoints_inserted > 2000
    archive.dispose()  # every backend of the first load has reported what it changed
    analyzed = analyzed_by_thread(archive)
    second = fakes.sync(archive, fake, SyncOptions(batch_rows=200))
    assert second.exit_code == 0 and second.counts.jobs_skipped == first.counts.jobs
    by_the_refresh = [table for tables in analyzed.values() for table in tables]
    assert by_the_refresh and not set(by_the_refresh) & set(LARGE_TABLES), analyzed
    archive.dispose()


def test_an_analysis_ahead_that_fails_is_left_to_the_refresh_at_the_runs_end(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(postgres_url)
    migrate.upgrade(engine)
    without_statistics(engine)
    real = upkeep.analyze

    def analyze(connection: sa.Connection, *, small: bool = True, leave: Collection[str] = ()) -> list[str]:
        if not small:  # ahead of the run's end
            raise sa.exc.OperationalError("ANALYZE", {}, Exception("the server went away"))
        return real(connection, small=small, leave=leave)

    monkeypatch.setattr(upkeep, "analyze", analyze)
    analyzed = analyzed_by_thread(engine)
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=30, checkpoints_per_job=50, active_fraction=0))
    report = fakes.sync(engine, fake, SyncOptions(batch_rows=200))
    assert report.exit_code == 0 and report.counts.checkpoints_inserted > 2000
    assert "analyze-ahead" not in analyzed
    at_the_end = {table for tables in analyzed.values() for table in tables}
    assert set(LARGE_TABLES) <= at_the_end
    engine.dispose()


def test_tables_analyzed_ahead_are_left_by_the_refresh_unless_the_run_changed_a_tenth_more_since(
    postgres_url: str,
) -> None:
    engine = db.make_engine(postgres_url)
    migrate.upgrade(engine)
    without_statistics(engine)  # each large table would be analyzed...
    with engine.begin() as connection:  # ...but those left
        left = upkeep.analyze(connection, small=False, leave={"checkpoints"})
        assert sorted(left) == ["checkpoint_facts", "checkpoint_history"]
    with engine.begin() as connection:  # (the server's statistics are read once a transaction)
        assert upkeep.analyze(connection, small=False) == ["checkpoints"]
    ahead = upkeep.AnalysisAhead(engine)
    without_statistics(engine)
    ahead.start(changed=5000)
    assert ahead.fresh(changed=5500) == {"checkpoint_facts", "checkpoint_history", "checkpoints"}
    assert ahead.fresh(changed=5501) == set()  # then the refresh judges by the server's counters
    engine.dispose()
