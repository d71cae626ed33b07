"""Where autovacuum does not run, a sync vacuums the archive's tables that the nights churn (PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, migrate, upkeep
from archiver.fake_api import FakeBaseten, OrgSpec

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
