"""The BI views, value by value, against expectations computed from what the fake API served."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, facts, migrate
from archiver.contract import TERMINAL_JOB_STATUSES
from archiver.fake_api import TERMINAL_STATUSES, FakeBaseten, OrgSpec
from archiver.normalize import Where, parse_timestamp
from archiver.schema import VERSIONS, JSONDocument
from archiver.schema import checkpoints as checkpoint_table
from archiver.sync import SyncOptions
from archiver.views import (
    FACTS,
    INTERNAL,
    VIEWS,
    checkpoint_facts,
    checkpoint_lora_modules,
    gpu_hours_daily,
    job_facts,
    project_storage_daily,
)

from .support import fakes
from .support.commands import run_archiver
from .support.databases import rows
from .support.orgs import NIGHTS, ArchivedOrg, archive_org
from .support.payloads import CHECKPOINTS, JOB, project_for

T = TypeVar("T")
GIB = 2**30
HOUR = timedelta(hours=1)


@pytest.fixture
def org(archive: Engine) -> ArchivedOrg:
    return archive_org(archive)


def to_date(value: Any) -> date:
    """A day as either database returns it from raw SQL: a date on PostgreSQL, text on SQLite."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def ts(text: str | None) -> datetime | None:
    return None if text is None else parse_timestamp(text, Where())


def created_at(checkpoint: dict[str, Any]) -> datetime:
    moment = ts(checkpoint["created_at"])
    assert moment is not None, "the fake dates every checkpoint"
    return moment


def modules_text(modules: list[str] | str | None) -> str | None:
    """What `lora_target_modules_text` should say: the names sorted and joined, or the regex."""
    return ",".join(sorted(set(modules))) if isinstance(modules, list) else modules


def read(engine: Engine, view: sa.Table, *, timezone: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        if timezone and connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SET TIME ZONE '{timezone}'")
        return [dict(row._mapping) for row in connection.execute(sa.select(view))]


def test_views_have_exactly_the_declared_columns(archive: Engine) -> None:
    inspector = sa.inspect(archive)
    assert set(inspector.get_view_names()) == {view.name for view in VIEWS}
    for view in VIEWS:
        reported = inspector.get_columns(view.name)
        assert [c["name"] for c in reported] == list(view.columns.keys())
        if archive.dialect.name == "postgresql":  # SQLite gives a view's computed columns no type
            declared = [column.type.compile(archive.dialect) for column in view.columns]
            assert [c["type"].compile(archive.dialect) for c in reported] == declared, view.name


# Columns computed from "now": the facts tables hold them as of the refresh, their views as of the query.
NOW_COLUMNS = {"hours_in_status", "hours_since_update"}


def test_facts_tables_have_a_declared_type_on_every_column_and_hold_what_their_views_compute(
    org: ArchivedOrg, archive: Engine
) -> None:
    """Superset and Metabase see times, dates and numbers on SQLite as on PostgreSQL (a view's
    computed columns had no type on SQLite), and the table a sync left is what its `_live` view says."""
    inspector = sa.inspect(archive)
    assert {table.name for table in FACTS} <= set(inspector.get_table_names())
    for table in FACTS:
        reported = inspector.get_columns(table.name)
        assert [c["name"] for c in reported] == list(table.columns.keys())
        declared = [column.type.compile(archive.dialect) for column in table.columns]
        assert [c["type"].compile(archive.dialect) for c in reported] == declared, table.name
        columns = ", ".join(c.name for c in table.columns if c.name not in NOW_COLUMNS)
        stored = rows(archive, f"SELECT {columns} FROM {table.name}")
        computed = rows(archive, f"SELECT {columns} FROM {table.name}_live")
        assert stored, table.name
        assert sorted(stored, key=repr) == sorted(computed, key=repr), table.name


def assert_facts_as_computed(archive: Engine) -> None:
    """Each facts table holds what its `_live` view computes (but the hours counted to "now")."""
    for table in FACTS:
        columns = ", ".join(c.name for c in table.columns if c.name not in NOW_COLUMNS)
        stored = rows(archive, f"SELECT {columns} FROM {table.name}")
        computed = rows(archive, f"SELECT {columns} FROM {table.name}_live")
        assert sorted(stored, key=repr) == sorted(computed, key=repr), table.name


def rewritten(archive: Engine) -> dict[str, object]:
    """When each facts table was last rewritten."""
    return {str(name): at for name, at in rows(archive, "SELECT name, refreshed_at FROM facts_inputs")}


@contextmanager
def watched_rewrites() -> Iterator[tuple[list[str], list[tuple[str, list[str]]]]]:
    """The facts tables a block rewrote whole, and those it rewrote for some jobs (with the jobs)."""
    whole: list[str] = []
    by_job: list[tuple[str, list[str]]] = []
    rewrite, rewrite_jobs = facts.rewrite, facts.rewrite_jobs

    def watched(connection: sa.Connection, table: sa.Table) -> None:
        whole.append(table.name)
        rewrite(connection, table)

    def watched_jobs(connection: sa.Connection, table: sa.Table, jobs: Sequence[str]) -> None:
        by_job.append((table.name, list(jobs)))
        rewrite_jobs(connection, table, jobs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(facts, "rewrite", watched)
        patch.setattr(facts, "rewrite_jobs", watched_jobs)
        yield whole, by_job


def test_a_sync_rewrites_the_steady_facts_tables_only_when_their_inputs_changed(archive: Engine) -> None:
    """The rewrite of every facts table made an unchanged night slow; checkpoint_facts and
    checkpoint_lora_modules depend on nothing but their inputs, so a sync keeps them while those are
    unchanged (every job finished: nothing is read again), and rewrites them after any change, a
    change whose refresh failed included."""
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=2, checkpoints_per_job=3, active_fraction=0))
    steady = ("checkpoint_facts", "checkpoint_lora_modules")
    assert fakes.sync(archive, fake).exit_code == 0
    assert_facts_as_computed(archive)
    first = rewritten(archive)
    assert set(first) == {table.name for table in FACTS}

    assert fakes.sync(archive, fake).exit_code == 0  # nothing changed
    assert_facts_as_computed(archive)
    again = rewritten(archive)
    assert [again[name] for name in steady] == [first[name] for name in steady]
    # Hours move on; the daily table is kept while its inputs and the day are as they were.
    assert all(again[t.name] != first[t.name] for t in FACTS if t.name not in (*steady, *facts.DAILY))

    project_id, other_project = fake.project_ids()
    job_id, other_job = fake.job_ids(project_id)[0], fake.job_ids(other_project)[0]
    changes: list[Callable[[], object]] = [
        lambda: fake.add_checkpoint(job_id),
        lambda: fake.set_project(project_id, name="renamed", team_name="another team"),
        lambda: fake.set_project(other_project, name="renamed"),  # a label collision
        lambda: fake.update_checkpoint(
            other_job, fake.checkpoints(other_job)[0]["checkpoint_id"], sync_status=""
        ),
        lambda: fake.delete_checkpoint(job_id, fake.checkpoints(job_id)[0]["checkpoint_id"]),
        lambda: fake.set_job(other_job, current_status="TRAINING_JOB_FAILED"),
        lambda: fake.delete_project(project_id),
    ]
    for change in changes:
        before = rewritten(archive)
        change()
        assert fakes.sync(archive, fake, SyncOptions(full=True)).exit_code == 0
        assert_facts_as_computed(archive)
        assert rewritten(archive)["checkpoint_facts"] != before["checkpoint_facts"]

    # A run whose refresh failed (or that was stopped before it) leaves its changes to the next run's.
    before = rewritten(archive)
    fake.add_checkpoint(other_job)

    def broken(connection: sa.Connection, table: sa.Table) -> None:
        raise sa.exc.OperationalError("INSERT INTO checkpoint_facts ...", {}, Exception("disk full"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(facts, "rewrite", broken)
        assert fakes.sync(archive, fake).exit_code == 0
    assert rewritten(archive) == before
    assert fakes.sync(archive, fake).exit_code == 0  # unchanged since: but not refreshed since
    assert_facts_as_computed(archive)
    assert rewritten(archive)["checkpoint_facts"] != before["checkpoint_facts"]

    # A running job's checkpoints are read every night: only its rows of the steady tables are rewritten.
    fake.set_job(other_job, current_status="TRAINING_JOB_RUNNING")
    assert fakes.sync(archive, fake).exit_code == 0
    with watched_rewrites() as (whole, by_job):
        assert fakes.sync(archive, fake).exit_code == 0
    assert sorted(by_job) == [
        ("checkpoint_facts", [other_job]),
        ("checkpoint_lora_modules", [other_job]),
        ("gpu_hours_daily", [other_job]),  # its run so far: up to this sighting
        ("job_facts", [other_job]),  # the others' rows are brought to now
    ]
    assert not set(whole) & {*steady, "gpu_hours_daily", "job_facts"}
    assert_facts_as_computed(archive)


def test_a_project_that_starts_a_job_has_the_facts_of_that_job_alone_written(archive: Engine) -> None:
    """A project gets a new version whenever it starts a job (its latest job, its `updated_at`): most
    nights of an organisation that trains. The facts read neither, so that night writes the new job's
    rows, not every checkpoint's again. A rename, a name another project has (both labels then name
    their ids) and a deletion rewrite the facts of the jobs of the projects they change."""
    fake = FakeBaseten(OrgSpec(projects=5, jobs_per_project=2, checkpoints_per_job=2, active_fraction=0))
    assert fakes.sync(archive, fake).exit_code == 0
    names = [fake.project(project)["name"] for project in fake.project_ids()]
    unique = [
        project for project, name in zip(fake.project_ids(), names, strict=True) if names.count(name) == 1
    ]
    project_id, other, gone = unique[:3]  # a label names its project's id when another has its name
    started = fake.start_job(project_id)
    fake.add_checkpoint(started)
    with watched_rewrites() as (whole, by_job):
        assert fakes.sync(archive, fake).exit_code == 0
    history = "SELECT id FROM training_project_history"
    assert [project for (project,) in rows(archive, history)] == [project_id]  # the project did change
    kept_by_job = {"checkpoint_facts", "checkpoint_lora_modules", "job_facts", "gpu_hours_daily"}
    assert not set(whole) & kept_by_job
    assert by_job and {tuple(jobs) for _, jobs in by_job} == {(started,)}
    assert_facts_as_computed(archive)

    def rewritten_jobs(change: Callable[[], object]) -> set[str]:
        change()
        with watched_rewrites() as (whole, by_job):
            assert fakes.sync(archive, fake).exit_code == 0
        assert not set(whole) & kept_by_job
        assert_facts_as_computed(archive)
        return {job for table, jobs in by_job if table == "checkpoint_facts" for job in jobs}

    assert rewritten_jobs(lambda: fake.set_project(project_id, name="renamed")) == set(
        fake.job_ids(project_id)
    )
    both = rewritten_jobs(lambda: fake.set_project(other, name="renamed"))
    assert both == {*fake.job_ids(project_id), *fake.job_ids(other)}
    labels = "SELECT DISTINCT project_id, project_label FROM checkpoint_facts WHERE project_name = 'renamed'"
    assert sorted(rows(archive, labels)) == sorted((p, f"renamed ({p})") for p in (project_id, other))
    jobs_of_gone = set(fake.job_ids(gone))
    # (and the job still running, read every night)
    assert rewritten_jobs(lambda: fake.delete_project(gone)) == {*jobs_of_gone, started}


@pytest.mark.parametrize("shared", list(facts.SHARED), ids=lambda table: table.name)
def test_the_facts_kept_by_job_read_no_other_column_of_the_tables_every_fact_reads(
    archive: Engine, shared: sa.Table
) -> None:
    """`facts.SHARED` names the columns the views read of projects and instance types: a refresh keeps
    every job's facts while those are as they were. A view that read another one would be left stale:
    a change to any other column must leave every facts table a refresh keeps by job as it computes it."""
    # Jobs of the era before `node_count`: their nodes are their instance type's.
    spec = OrgSpec(projects=3, jobs_per_project=2, checkpoints_per_job=2, active_fraction=0, spec_era="C")
    assert fakes.sync(archive, FakeBaseten(spec)).exit_code == 0
    kept_by_job = [table for table in FACTS if table.name not in facts.DAILY]
    changed = {
        str: "changed",
        int: 12345,
        dict: {"changed": True},
        datetime: datetime(2001, 2, 3, tzinfo=UTC),
    }

    def computed(connection: sa.Connection) -> dict[str, list[tuple[object, ...]]]:
        found = {}
        for table in kept_by_job:
            columns = ", ".join(c.name for c in table.columns if c.name not in NOW_COLUMNS)
            query = sa.text(f"SELECT {columns} FROM {table.name}_live")
            found[table.name] = sorted((tuple(row) for row in connection.execute(query)), key=repr)
        return found

    others = [column for column in shared.columns if column.name not in facts.SHARED[shared]]
    assert others
    with archive.connect() as connection:
        before = computed(connection)
        connection.rollback()
        assert all(before.values())
        for column in others:
            kind = column.type.python_type  # object: a timestamp (`UTCDateTime`) or a JSON document
            if kind is object:
                kind = dict if isinstance(column.type, type(JSONDocument)) else datetime
            value = changed[kind]
            transaction = connection.begin()
            assert connection.execute(sa.update(shared).values({column.name: value})).rowcount
            assert computed(connection) == before, column.name
            transaction.rollback()


def test_job_facts_rows_are_brought_to_now_and_rewritten_only_for_the_jobs_written(archive: Engine) -> None:
    """`job_facts` counts hours up to the refresh and shows when each job was last seen, which moves
    every night: a sync that changed nothing else sets those columns and rewrites no row, one that
    wrote a job rewrites that job's row, and the table holds what its view computes, hours included."""
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=3, checkpoints_per_job=2, active_fraction=0))
    assert fakes.sync(archive, fake).exit_code == 0
    seen = sa.select(job_facts.c.job_id, job_facts.c.last_seen_at).order_by(job_facts.c.job_id)
    with archive.connect() as connection:
        before = connection.execute(seen).all()
    with watched_rewrites() as (whole, by_job):
        assert fakes.sync(archive, fake).exit_code == 0  # every job finished: none read again
    assert "job_facts" not in whole and "job_facts" not in dict(by_job)
    with archive.connect() as connection:
        after = connection.execute(seen).all()
    assert [row.job_id for row in after] == [row.job_id for row in before]
    assert all(now.last_seen_at > then.last_seen_at for now, then in zip(after, before, strict=True))
    assert_job_facts_as_computed_at_refresh(archive)

    # A running job is read every night: its row is rewritten.
    job_id = fake.job_ids()[0]
    fake.set_job(job_id, current_status="TRAINING_JOB_RUNNING")
    assert fakes.sync(archive, fake).exit_code == 0
    assert_job_facts_as_computed_at_refresh(archive)
    with watched_rewrites() as (whole, by_job):
        assert fakes.sync(archive, fake).exit_code == 0
    assert "job_facts" not in whole and dict(by_job)["job_facts"] == [job_id]
    assert_job_facts_as_computed_at_refresh(archive)
    assert_job_facts_as_computed_at_refresh(archive)

    project = fake.project_ids()[0]
    fake.set_project(project, name="renamed")  # the rows of its jobs show its name
    with watched_rewrites() as (whole, by_job):
        assert fakes.sync(archive, fake).exit_code == 0
    assert "job_facts" not in whole and set(dict(by_job)["job_facts"]) == {*fake.job_ids(project), job_id}
    assert_job_facts_as_computed_at_refresh(archive)


def assert_job_facts_as_computed_at_refresh(archive: Engine) -> None:
    """`job_facts` is what its view computes, hours included, when refreshed as a sync does.

    In one transaction, so "now" is the same instant on PostgreSQL; SQLite's 'now' is read per
    statement, to the whole second, so there the hours may differ by whole seconds' worth (one, when
    a second turned between the statements: seen in CI; a few on a loaded machine).
    """
    hours = 5 / 3600 + 1e-9 if archive.dialect.name == "sqlite" else 0
    columns = [c.name for c in job_facts.c]
    with archive.begin() as connection:
        facts.refresh(connection, keep_unchanged=True)
        stored = connection.execute(sa.text(f"SELECT {', '.join(columns)} FROM job_facts")).all()
        computed = connection.execute(sa.text(f"SELECT {', '.join(columns)} FROM job_facts_live")).all()
    clocked = [columns.index(name) for name in NOW_COLUMNS]
    assert len(stored) == len(computed)
    for have, want in zip(sorted(stored, key=repr), sorted(computed, key=repr), strict=True):
        assert [v for i, v in enumerate(have) if i not in clocked] == [
            v for i, v in enumerate(want) if i not in clocked
        ]
        for i in clocked:
            assert (have[i] is None) == (want[i] is None), columns[i]
            if have[i] is not None:
                assert abs(have[i] - want[i]) <= hours, (columns[i], have[i], want[i])


def test_project_storage_daily_is_kept_while_its_inputs_and_the_day_are_as_they_were(archive: Engine) -> None:
    """It counts days up to today: a sync leaves it when nothing it reads changed since it was
    computed that same day, and rewrites it on a later day or after any change."""
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=2, checkpoints_per_job=2, active_fraction=0))
    today = "SELECT inputs FROM facts_inputs WHERE name = 'project_storage_daily'"
    assert fakes.sync(archive, fake).exit_code == 0
    first = rewritten(archive)
    (recorded,) = rows(archive, today)
    assert fakes.sync(archive, fake).exit_code == 0  # nothing changed
    assert_facts_as_computed(archive)
    if rows(archive, today) == [recorded]:  # (unless the UTC day turned in between)
        assert rewritten(archive)["project_storage_daily"] == first["project_storage_daily"]
        assert rewritten(archive)["job_facts"] != first["job_facts"]

    # Computed on another day (the database's clock cannot be moved: the record says so instead).
    with archive.begin() as connection:
        moved = json.dumps(json.loads(str(recorded[0])) | {"day": "2000-01-01"})
        connection.execute(
            sa.text("UPDATE facts_inputs SET inputs = :moved WHERE name = 'project_storage_daily'"),
            {"moved": moved},
        )
    before = rewritten(archive)
    assert fakes.sync(archive, fake).exit_code == 0
    assert rewritten(archive)["project_storage_daily"] != before["project_storage_daily"]
    assert json.loads(str(rows(archive, today)[0][0]))["day"] != "2000-01-01"

    # Every job read again and found as it was (--full here; the periodic re-read does it to a few
    # jobs each night): only when each was read and seen moved, which it does not read.
    before = rewritten(archive)
    (kept,) = rows(archive, today)
    assert fakes.sync(archive, fake, SyncOptions(full=True)).exit_code == 0
    assert_facts_as_computed(archive)
    if json.loads(str(rows(archive, today)[0][0]))["day"] == json.loads(str(kept[0]))["day"]:
        assert rewritten(archive)["project_storage_daily"] == before["project_storage_daily"]
        assert rewritten(archive)["checkpoint_facts"] != before["checkpoint_facts"]  # it shows last seen

    # A change on the same day.
    before = rewritten(archive)
    job_id = fake.job_ids()[0]
    fake.add_checkpoint(job_id)
    assert fakes.sync(archive, fake, SyncOptions(full=True)).exit_code == 0
    assert rewritten(archive)["project_storage_daily"] != before["project_storage_daily"]
    assert_facts_as_computed(archive)


def test_gpu_hours_daily_is_rewritten_for_the_runs_that_can_have_moved(archive: Engine) -> None:
    """A run's GPU-hours count up to when its job was last seen while it runs (or finished without
    saying when): a sync rewrites the rows of those jobs and of the jobs written since, and keeps the
    rest while the day is the one they were counted on."""
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=3, checkpoints_per_job=2, active_fraction=0))
    gpu_hours = "gpu_hours_daily"
    assert fakes.sync(archive, fake).exit_code == 0
    recorded = f"SELECT inputs FROM facts_inputs WHERE name = '{gpu_hours}'"
    (first,) = rows(archive, recorded)
    with watched_rewrites() as (whole, by_job):
        assert fakes.sync(archive, fake).exit_code == 0  # every job finished, nothing changed
    if rows(archive, recorded) == [first]:  # (unless the UTC day turned in between)
        assert gpu_hours not in whole and gpu_hours not in dict(by_job)
    assert_facts_as_computed(archive)

    running = fake.job_ids()[0]
    fake.set_job(running, current_status="TRAINING_JOB_RUNNING")
    assert fakes.sync(archive, fake).exit_code == 0
    for _ in range(2):  # nothing else changes, but the run goes on: its rows, and no other's
        with watched_rewrites() as (whole, by_job):
            assert fakes.sync(archive, fake).exit_code == 0
        assert gpu_hours not in whole and dict(by_job)[gpu_hours] == [running]
        assert_facts_as_computed(archive)

    with archive.begin() as connection:  # counted on another day (the database's clock cannot move)
        (text,) = connection.execute(sa.text(recorded)).one()
        moved = json.dumps(json.loads(str(text)) | {"day": "2000-01-01"})
        connection.execute(
            sa.text(f"UPDATE facts_inputs SET inputs = :moved WHERE name = '{gpu_hours}'"), {"moved": moved}
        )
    with watched_rewrites() as (whole, by_job):
        assert fakes.sync(archive, fake).exit_code == 0
    assert gpu_hours in whole
    assert_facts_as_computed(archive)
    # The jobs the refresh takes for finished are those the view counts to their `updated_at`.
    if archive.dialect.name == "sqlite":
        definition = f"SELECT sql FROM sqlite_master WHERE name = '{gpu_hours}_live'"
    else:
        definition = f"SELECT pg_get_viewdef('archiver_internal.{gpu_hours}_live'::regclass)"
    ((sql,),) = rows(archive, definition)
    named = set(re.findall(r"'TRAINING_JOB_\w+'", str(sql)))
    assert named == {f"'{status}'" for status in TERMINAL_JOB_STATUSES}


def test_on_postgresql_a_refresh_gives_the_planner_what_the_views_read_as_it_is(postgres_url: str) -> None:
    """Where autovacuum is off (as on the test server) or has not come round yet, the facts views were
    planned for tables taken to be empty or as they once were: rewriting `gpu_hours_daily` of 92,520
    checkpoints took 0.65 s at every sync instead of 0.08 s. The refresh analyzes them first."""
    engine = db.make_engine(postgres_url)
    try:
        migrate.upgrade(engine)
        counted = (
            "SELECT relname, reltuples FROM pg_class "
            "WHERE relname IN ('training_jobs', 'training_projects', 'lora_adapter_configs')"
        )
        assert {name: count for name, count in rows(engine, counted)} == {
            "training_jobs": 0,
            "training_projects": 0,
            "lora_adapter_configs": 0,
        }
        fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=3, checkpoints_per_job=2, active_fraction=0))
        assert fakes.sync(engine, fake).exit_code == 0
        assert {name: count for name, count in rows(engine, counted)}["training_jobs"] == 6
        # A large table never analyzed (its counters cleared: the migration analyzed it empty) is: after a
        # run that wrote none of its rows, whole (after one that did, only the column `job_facts_live`
        # groups by: see `test_postgresql_analyzes_checkpoint_facts_by_job_after_writing_it_and_whole_once_after`),
        # with how many rows it has.
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "SELECT pg_stat_reset_single_table_counters('checkpoint_facts'::regclass)"
            )
        assert fakes.sync(engine, fake).exit_code == 0
        gathered = "SELECT attname FROM pg_stats WHERE tablename = 'checkpoint_facts'"
        columns = {name for (name,) in rows(engine, gathered)}
        assert {"job_id", "project_id", "checkpoint_id", "size_bytes"} <= columns
        ((estimated,),) = rows(engine, "SELECT reltuples FROM pg_class WHERE relname = 'checkpoint_facts'")
        ((facts_rows,),) = rows(engine, "SELECT count(*) FROM checkpoint_facts")
        assert isinstance(facts_rows, int) and estimated == facts_rows > 0
        fake.add_project(jobs=2)
        assert fakes.sync(engine, fake).exit_code == 0
        found = {name: count for name, count in rows(engine, counted)}
        configs = rows(engine, "SELECT COUNT(*) FROM lora_adapter_configs")[0][0]
        assert found == {"training_jobs": 8, "training_projects": 3, "lora_adapter_configs": configs}
    finally:
        engine.dispose()


def test_a_sync_rewrites_the_steady_facts_of_each_batch_as_it_writes_it(archive: Engine) -> None:
    """Each batch's jobs get their rows of the steady tables in the transaction that writes them, while
    the fetches go on; the refresh at the run's end leaves those alone, unless what the run wrote after
    them (a deletion judged once every listing is in) is read by them."""
    fake = FakeBaseten(OrgSpec(projects=2, jobs_per_project=3, checkpoints_per_job=4, active_fraction=0))
    calls: list[tuple[str, list[str]]] = []
    rewrite_jobs = facts.rewrite_jobs

    def watched(connection: sa.Connection, table: sa.Table, jobs: Sequence[str]) -> None:
        calls.append((table.name, sorted(jobs)))
        rewrite_jobs(connection, table, jobs)

    options = SyncOptions(batch_rows=9)  # two jobs (and their 4 checkpoints each) a batch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(facts, "rewrite_jobs", watched)
        assert fakes.sync(archive, fake, options).exit_code == 0
    assert_facts_as_computed(archive)
    batches = [jobs for name, jobs in calls if name == "checkpoint_facts"]
    assert len(batches) == 3 and sorted(job for jobs in batches for job in jobs) == sorted(fake.job_ids())
    assert [jobs for name, jobs in calls if name == "checkpoint_lora_modules"] == batches

    # A checkpoint gone: judged (and marked) after every batch was written, so its job's rows are
    # rewritten at the end too.
    job_id = fake.job_ids()[0]
    fake.delete_checkpoint(job_id, fake.checkpoints(job_id)[0]["checkpoint_id"])
    assert fakes.sync(archive, fake, SyncOptions(full=True)).exit_code == 0
    assert_facts_as_computed(archive)
    deleted = "SELECT COUNT(*) FROM checkpoint_facts WHERE deleted_at IS NOT NULL"
    assert rows(archive, deleted) == [(1,)]


def test_a_batch_whose_facts_the_database_refuses_is_still_written(archive: Engine) -> None:
    """The rewrite of a batch's facts runs in a savepoint: refused, the batch's jobs are archived all
    the same, and the refresh at the run's end rewrites their rows."""
    fake = FakeBaseten(OrgSpec(projects=1, jobs_per_project=3, checkpoints_per_job=2, active_fraction=0))
    rewrite_jobs = facts.rewrite_jobs
    refused: list[list[str]] = []

    def refuse_once(connection: sa.Connection, table: sa.Table, jobs: Sequence[str]) -> None:
        if not refused:
            refused.append(list(jobs))
            raise sa.exc.OperationalError("INSERT INTO checkpoint_facts ...", {}, Exception("disk I/O error"))
        rewrite_jobs(connection, table, jobs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(facts, "rewrite_jobs", refuse_once)
        report = fakes.sync(archive, fake)
    assert report.exit_code == 0 and refused
    listed = fake.total_checkpoints()
    assert listed >= 3
    assert rows(archive, "SELECT COUNT(*) FROM checkpoints") == [(listed,)]
    assert_facts_as_computed(archive)
    assert rows(archive, "SELECT COUNT(*) FROM checkpoint_facts") == [(listed,)]


def test_a_connection_lost_while_a_batchs_facts_are_rewritten_is_a_lost_write_not_a_refusal(
    postgres_url: str,
) -> None:
    """The savepoint takes a refusal; a connection cut under it (a failover) must fail the write as
    any lost write does, so the batch is written again. Taken for a refusal, the transaction went
    on over a dead connection and the run ended in SQLAlchemy's PendingRollbackError."""
    engine = db.make_engine(postgres_url)
    try:
        migrate.upgrade(engine)
        fake = FakeBaseten(OrgSpec(projects=1, jobs_per_project=3, checkpoints_per_job=2, active_fraction=0))
        rewrite_jobs = facts.rewrite_jobs
        cut: list[list[str]] = []

        def cut_once(connection: sa.Connection, table: sa.Table, jobs: Sequence[str]) -> None:
            if not cut:
                cut.append(list(jobs))
                connection.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
            rewrite_jobs(connection, table, jobs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(facts, "rewrite_jobs", cut_once)
            report = fakes.sync(engine, fake)
        assert cut and report.exit_code == 0 and not report.failures
        listed = fake.total_checkpoints()
        assert rows(engine, "SELECT COUNT(*) FROM checkpoints") == [(listed,)]
        assert rows(engine, "SELECT COUNT(*) FROM checkpoint_facts") == [(listed,)]
        assert_facts_as_computed(engine)
    finally:
        engine.dispose()


def test_every_column_a_reader_sees_has_a_declared_type(org: ArchivedOrg, archive: Engine) -> None:
    """SQLite declares no type for a view's computed column, so a BI tool took it for text: every
    relation outside the bookkeeping (Datasette hides that; PostgreSQL keeps it in archiver_internal)
    declares one for each column. `training_job_status_history.sync_run_id` was the last without."""
    inspector = sa.inspect(archive)
    seen = [
        name for name in (*inspector.get_table_names(), *inspector.get_view_names()) if name not in INTERNAL
    ]
    assert {"checkpoint_facts", "training_job_status_history", "checkpoints", "sync_runs"} <= set(seen)
    untyped = [
        f"{name}.{column['name']}"
        for name in seen
        for column in inspector.get_columns(name)
        if isinstance(column["type"], sa.types.NullType)
    ]
    assert untyped == []


def test_each_sync_refreshes_the_facts_tables(archive: Engine) -> None:
    fake = fakes.small_org()
    (job_id,) = fake.job_ids()
    assert fakes.sync(archive, fake).exit_code == 0
    counted = "SELECT checkpoint_count FROM job_facts"
    assert rows(archive, counted) == [(1,)]
    fake.add_checkpoint(job_id)
    assert rows(archive, counted) == [(1,)]  # a table: what the last sync left
    assert fakes.sync(archive, fake, SyncOptions(full=True)).exit_code == 0
    assert rows(archive, counted) == [(2,)]
    assert rows(archive, "SELECT COUNT(*) FROM checkpoint_facts") == [(2,)]


def facts_indexes(engine: Engine) -> dict[str, list[tuple[str, tuple[str, ...], bool]]]:
    inspector = sa.inspect(engine)
    return {
        table.name: sorted(
            (str(index["name"]), tuple(str(c) for c in index["column_names"]), bool(index["unique"]))
            for index in inspector.get_indexes(table.name)
        )
        for table in FACTS
    }


def test_a_refresh_leaves_the_facts_tables_indexed_as_their_revision_made_them(archive: Engine) -> None:
    """SQLite sets a rewritten table's indexes aside and builds them again; none may be lost or changed."""
    made = facts_indexes(archive)
    assert made["checkpoint_facts"] and made["checkpoint_lora_modules"]
    fake = fakes.small_org()
    assert fakes.sync(archive, fake).exit_code == 0
    assert rows(archive, "SELECT COUNT(*) FROM checkpoint_facts") == [(1,)]
    with archive.begin() as connection:
        facts.refresh(connection)  # every table rewritten whole
    assert facts_indexes(archive) == made
    plan = "EXPLAIN QUERY PLAN SELECT * FROM checkpoint_facts WHERE job_id = 'x'"
    if archive.dialect.name == "sqlite":  # and the planner uses them
        assert "ix_checkpoint_facts_job_id" in str(rows(archive, plan))


def test_a_jobs_facts_rows_are_replaced_through_an_index_on_job_id(archive: Engine) -> None:
    """A sync deletes the rows of the jobs it wrote from the steady tables, by job: through an index on
    `job_id`, not by reading every row (revision 0024 gave `checkpoint_lora_modules` one)."""
    fake = fakes.small_org()
    assert fakes.sync(archive, fake).exit_code == 0
    for table in facts.STEADY:
        delete = f"DELETE FROM {table} WHERE job_id IN ('a', 'b')"
        with archive.connect() as connection:
            if archive.dialect.name == "sqlite":
                plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {delete}").all()
            else:  # on a table this small PostgreSQL would rather scan: is there an index it can use?
                connection.exec_driver_sql("SET enable_seqscan = off")
                plan = connection.exec_driver_sql(f"EXPLAIN {delete}").all()
                connection.rollback()
        assert f"ix_{table}_job_id" in str(plan), (table, plan)


def project_labels(archive: Engine) -> dict[str, str]:
    """Each project's name, with its id where another project has the same name (computed here, not read)."""
    named = {str(pid): name for pid, name in rows(archive, "SELECT id, name FROM training_projects")}
    names = list(named.values())
    return {
        str(pid): str(pid) if not name else f"{name} ({pid})" if names.count(name) > 1 else str(name)
        for pid, name in named.items()
    }


def uploaded(state: str | None) -> bool | None:
    if state is None or not state.strip():
        return None
    return state.strip().upper() in ("COMPLETE", "COMPLETED")


def as_array(modules: list[str] | str | None) -> list[str] | None:
    return [modules] if isinstance(modules, str) else modules


def test_checkpoint_facts(org: ArchivedOrg, archive: Engine) -> None:
    labels = project_labels(archive)
    assert len(set(labels.values())) == len(labels) and any("(" in label for label in labels.values())
    expected = {}
    for job_id, served in org.jobs.items():
        job, project, itype = served.job, served.project, served.job["instance_type"]
        for c in served.checkpoints:
            lora = c.get("lora_adapter_config") or {}
            expected[(job_id, c["checkpoint_id"])] = {
                "project_id": project["id"],
                "project_name": project["name"],
                "project_label": labels[project["id"]],
                "team_name": project["team_name"],
                "job_id": job_id,
                "job_name": job["name"],
                "checkpoint_id": c["checkpoint_id"],
                "checkpoint_type": c["checkpoint_type"],
                "created_at": ts(c["created_at"]),
                "size_bytes": c["size_bytes"],
                "size_gib": pytest.approx(c["size_bytes"] / GIB),
                "sync_status": c.get("sync_status"),
                "is_uploaded": uploaded(c.get("sync_status")),
                "base_model": c["base_model"],
                "lora_r": lora.get("r"),
                "lora_alpha": lora.get("lora_alpha"),
                "lora_dropout": lora.get("lora_dropout"),
                "lora_target_modules": as_array(lora.get("target_modules")),
                "lora_target_modules_text": modules_text(lora.get("target_modules")),
                "job_status": job["current_status"],
                "job_creator_email": (job["user"] or {}).get("email"),
                "job_created_at": ts(job["created_at"]),
                "instance_type_name": itype["name"],
                "gpu_type": itype["gpu_type"],
                "gpu_count": itype["gpu_count"],
                "first_seen_at": NIGHTS[0],
                "last_seen_at": NIGHTS[0]
                if org.checkpoint_deleted_at(job_id, c["checkpoint_id"])
                else NIGHTS[1],
                "deleted_at": org.checkpoint_deleted_at(job_id, c["checkpoint_id"]),
                "project_deleted_at": NIGHTS[1] if project["id"] == org.deleted_project else None,
            }
    found = {(row["job_id"], row["checkpoint_id"]): row for row in read(archive, checkpoint_facts)}
    assert found.keys() == expected.keys()
    for key, row in found.items():
        assert row == expected[key], key


def test_job_facts(org: ArchivedOrg, archive: Engine) -> None:
    labels = project_labels(archive)
    now = datetime.now(UTC)
    found = {row["job_id"]: row for row in read(archive, job_facts)}
    assert found.keys() == org.jobs.keys()
    for job_id, served in org.jobs.items():
        job, project, itype = served.job, served.project, served.job["instance_type"]
        cps = served.checkpoints
        live = [c for c in cps if org.checkpoint_deleted_at(job_id, c["checkpoint_id"]) is None]
        latest = max(cps, key=created_at, default=None)
        created, updated = ts(job["created_at"]), ts(job["updated_at"])
        assert created is not None and updated is not None
        first = min((created_at(c) for c in cps), default=None)
        last = max((created_at(c) for c in cps), default=None)
        terminal = job["current_status"] in TERMINAL_STATUSES
        wall = (updated - created) / HOUR if terminal else None
        nodes = job.get("node_count", 1)
        since = status_since(org, job_id)
        deleted = NIGHTS[1] if project["id"] == org.deleted_project else None
        expected = {
            "job_id": job_id,
            "job_name": job["name"],
            "project_id": project["id"],
            "project_name": project["name"],
            "project_label": labels[project["id"]],
            "team_name": project["team_name"],
            "job_status": job["current_status"],
            "job_status_since": since,
            "hours_in_status": pytest.approx((now - since) / HOUR, abs=0.05),
            "error_message": job["error_message"],
            "checkpoint_sync_status": job["checkpoint_sync_status"],
            "creator_email": (job["user"] or {}).get("email"),
            "instance_type_name": itype["name"],
            "gpu_type": itype["gpu_type"],
            "gpu_count": itype["gpu_count"],
            "node_count": nodes,
            "node_count_source": "node_count" if "node_count" in job else "default",
            "total_gpu_count": itype["gpu_count"] * nodes,
            "created_at": created,
            "updated_at": updated,
            "hours_since_update": pytest.approx((now - updated) / HOUR, abs=0.05),
            "checkpoint_count": len(cps),
            "live_checkpoint_count": len(live),
            "checkpoints_size_bytes": sum(c["size_bytes"] for c in cps),
            "checkpoints_size_gib": pytest.approx(sum(c["size_bytes"] for c in cps) / GIB),
            "live_size_bytes": sum(c["size_bytes"] for c in live),
            "live_size_gib": pytest.approx(sum(c["size_bytes"] for c in live) / GIB),
            "latest_checkpoint_id": latest and latest["checkpoint_id"],
            "latest_checkpoint_size_bytes": latest and latest["size_bytes"],
            "latest_checkpoint_size_gib": latest and pytest.approx(latest["size_bytes"] / GIB),
            "first_checkpoint_at": first,
            "last_checkpoint_at": last,
            # Exactly the double Python computes from whole microseconds, on both databases.
            "hours_to_first_checkpoint": first and (first - created) / HOUR,
            "wall_clock_hours": wall,
            "gpu_hours_estimate": None if wall is None else wall * itype["gpu_count"] * nodes,
            "first_seen_at": NIGHTS[0],
            "last_seen_at": NIGHTS[0] if deleted else NIGHTS[1],
            "deleted_at": deleted,
            "project_deleted_at": deleted,
        }
        assert found[job_id] == expected, job_id
    # The organisation has jobs that exercise each rule.
    assert any(row["node_count"] == 2 for row in found.values())
    assert any(row["gpu_hours_estimate"] is None for row in found.values())


def status_since(org: ArchivedOrg, job_id: str) -> datetime:
    """When the job took on its current status, by job_facts' rule."""
    status = org.jobs[job_id].job["current_status"]
    if status not in TERMINAL_STATUSES:
        return NIGHTS[0]  # first seen in it
    if job_id == org.finished_job:
        # The fake's clock is months behind the nights: its updated_at is bounded by the RUNNING sighting.
        updated = ts(org.jobs[job_id].job["updated_at"])
        assert updated is not None and updated < NIGHTS[0]
        return NIGHTS[0]
    # Finished before it was first seen: when the API said it was last updated then.
    updated = ts(org.first_night[job_id].job["updated_at"])
    assert updated is not None and updated < NIGHTS[0]
    return updated


def on_one_utc_day(action: Callable[[], T]) -> tuple[date, T]:
    """Run `action` and return the UTC date it ran on; again if midnight passed meanwhile (views end today)."""
    while True:
        day = datetime.now(UTC).date()
        result = action()
        if datetime.now(UTC).date() == day:
            return day, result


def test_project_storage_daily(org: ArchivedOrg, archive: Engine) -> None:
    """A project from the day it was created, a checkpoint from the day it was created until deleted:
    the archive's history reaches back before its first sync."""
    checkpoints: dict[str, list[tuple[date, date | None, int]]] = {}
    starts: dict[str, date] = {}
    for job_id, served in org.jobs.items():
        project_id, project_created = served.project["id"], ts(served.project["created_at"])
        assert project_created is not None
        starts[project_id] = project_created.date()
        for c in served.checkpoints:
            gone = org.checkpoint_deleted_at(job_id, c["checkpoint_id"])
            checkpoints.setdefault(project_id, []).append(
                (created_at(c).date(), gone and gone.date(), c["size_bytes"])
            )

    def expected_until(today: date) -> dict[tuple[str, date], tuple[int, int]]:
        expected = {}
        for project_id, items in checkpoints.items():
            day = min(starts[project_id], *(made for made, _, _ in items))
            while day <= today:
                live = [size for made, gone, size in items if made <= day and not (gone and gone <= day)]
                expected[(project_id, day)] = (len(live), sum(live))
                day += timedelta(days=1)
        return expected

    for timezone in (None, "Pacific/Kiritimati"):  # UTC+14: a UTC day must stay a UTC day
        today, daily = on_one_utc_day(partial(read, archive, project_storage_daily, timezone=timezone))
        found = {
            (row["project_id"], row["day"]): (row["live_checkpoint_count"], row["live_size_bytes"])
            for row in daily
        }
        assert found == expected_until(today)
        assert {row["project_id"]: row["project_label"] for row in daily}.items() <= project_labels(
            archive
        ).items()
    assert min(day for _, day in found) < NIGHTS[0].date() - timedelta(days=100)
    deleted = {day: held for (project, day), held in found.items() if project == org.deleted_project}
    assert deleted[NIGHTS[0].date()] != (0, 0)
    assert {held for day, held in deleted.items() if day >= NIGHTS[1].date()} == {(0, 0)}


def test_a_checkpoint_that_existed_within_one_utc_day_is_never_live(
    org: ArchivedOrg, archive: Engine
) -> None:
    """Storage is what a project held at the end of each day: a checkpoint created and deleted on
    the same UTC day never counts."""
    job_id, checkpoint_id = next(
        (j, c["checkpoint_id"])
        for j, s in org.jobs.items()
        for c in s.checkpoints
        if org.checkpoint_deleted_at(j, c["checkpoint_id"]) is None
    )
    project_id = org.jobs[job_id].project["id"]
    made, gone = datetime(2026, 6, 10, 1, tzinfo=UTC), datetime(2026, 6, 10, 23, tzinfo=UTC)

    def storage() -> dict[date, int]:
        with archive.begin() as connection:  # as the sync that follows a change does
            facts.refresh(connection)
        return {
            r["day"]: r["live_size_bytes"]
            for r in read(archive, project_storage_daily)
            if r["project_id"] == project_id
        }

    before = storage()
    table, history = checkpoint_table, VERSIONS["checkpoints"].history
    where = (table.c.training_job_id == job_id) & (table.c.checkpoint_id == checkpoint_id)
    with archive.begin() as connection:  # its only live version began and ended on June 10
        row = connection.execute(sa.select(table).where(where)).one()._asdict()
        values = {c.name: row[c.name] for c in history.columns if c.name in row}
        connection.execute(
            sa.insert(history).values({**values, "created_at": made, "valid_from": made, "valid_to": gone})
        )
        connection.execute(
            sa.update(table).where(where).values(created_at=made, deleted_at=gone, valid_from=gone)
        )
    after = storage()
    assert len(before.keys() & after.keys()) > 100
    assert {day: after[day] for day in before if day in after} == {
        day: size - row["size_bytes"] for day, size in before.items() if day in after
    }


def test_a_checkpoint_deleted_and_restored_is_not_live_in_between(archive: Engine) -> None:
    fake = FakeBaseten(OrgSpec(projects=0))
    fake.add_project(jobs=1, checkpoints_per_job=2)
    (job_id,) = fake.job_ids()
    kept, gone = fake.checkpoints(job_id)
    project_id = fake.job(job_id)["training_project_id"]
    nights = [datetime(2026, 6, day, 3, tzinfo=UTC) for day in (1, 3, 6)]
    assert fakes.sync(archive, fake, clock=lambda: nights[0]).exit_code == 0
    fake.delete_checkpoint(job_id, gone["checkpoint_id"])
    assert fakes.sync(archive, fake, SyncOptions(full=True), clock=lambda: nights[1]).exit_code == 0
    fake.add_checkpoint(job_id, **gone)
    assert fakes.sync(archive, fake, SyncOptions(full=True), clock=lambda: nights[2]).exit_code == 0
    daily = {
        r["day"]: (r["live_checkpoint_count"], r["live_size_bytes"])
        for r in read(archive, project_storage_daily)
        if r["project_id"] == project_id
    }
    both, one = (2, kept["size_bytes"] + gone["size_bytes"]), (1, kept["size_bytes"])
    assert [daily[date(2026, 6, day)] for day in range(1, 8)] == [both, both, one, one, one, both, both]
    assert daily[created_at(gone).date()] == both  # and from the day it was created, months before


def test_a_timestamp_from_year_1_or_9999_keeps_the_daily_facts_to_ten_years(archive: Engine) -> None:
    """Go's zero time as a job's and a checkpoint's `created_at`, an `updated_at` in 9999: the facts
    tables are computed at every sync, and a row per day since year 1 grew one test's archive past 1.4 GB."""
    fake = fakes.small_org()
    (job_id,) = fake.job_ids()
    project_id = fake.job(job_id)["training_project_id"]
    zero = "0001-01-01T00:00:00Z"
    fake.set_job(job_id, created_at=zero, updated_at="9999-06-01T00:00:00Z")
    fake.add_checkpoint(job_id, created_at=zero)
    assert fakes.sync(archive, fake).exit_code == 0
    first, last, days, held = rows(
        archive,
        "SELECT MIN(day), MAX(day), COUNT(*), MAX(live_checkpoint_count) FROM project_storage_daily "
        "WHERE project_id = :p",
        p=project_id,
    )[0]
    first, last = to_date(first), to_date(last)
    assert (last - first, days) == (timedelta(days=3652), 3653)
    assert last >= datetime.now(UTC).date() - timedelta(days=1)
    assert held == 2  # the checkpoint from year 1 counts from the first day shown
    spent = rows(archive, "SELECT COUNT(*), SUM(hours) FROM gpu_hours_daily WHERE job_id = :j", j=job_id)[0]
    assert spent[0] == 3653 and spent[1] == pytest.approx(3653 * 24)


def test_project_storage_daily_charges_each_day_to_the_team_of_that_day(archive: Engine) -> None:
    """A project moved to another team keeps its earlier days under the team that had it then."""
    fake = fakes.small_org()
    (job_id,) = fake.job_ids()
    project_id = fake.job(job_id)["training_project_id"]
    fake.set_project(project_id, team_name="research")
    nights = [datetime(2026, 6, 1, 3, tzinfo=UTC), datetime(2026, 6, 4, 3, tzinfo=UTC)]
    assert fakes.sync(archive, fake, clock=lambda: nights[0]).exit_code == 0
    fake.set_project(project_id, team_name="platform")
    assert fakes.sync(archive, fake, SyncOptions(full=True), clock=lambda: nights[1]).exit_code == 0
    teams = {
        r["day"]: r["team_name"]
        for r in read(archive, project_storage_daily)
        if r["project_id"] == project_id
    }
    assert [teams[date(2026, 6, day)] for day in range(1, 7)] == ["research"] * 3 + ["platform"] * 3
    assert {team for day, team in teams.items() if day < date(2026, 6, 1)} == {
        "research"
    }  # before the archive
    assert rows(archive, "SELECT team_name FROM job_facts") == [("platform",)]  # a job's facts: today's team


def test_downgrade_drops_the_views(archive: Engine) -> None:
    migrate.downgrade(archive, "0002")
    assert sa.inspect(archive).get_view_names() == []
    migrate.upgrade(archive)
    assert set(sa.inspect(archive).get_view_names()) == {view.name for view in VIEWS}


def test_job_facts_latest_checkpoint_is_the_same_on_both_databases_when_a_created_at_is_null(
    archive: Engine,
) -> None:
    """An archive written before the API contract was enforced may hold `created_at` null. NULL sorts
    first in ORDER BY ... DESC on PostgreSQL but last on SQLite; `job_facts` puts undated checkpoints
    last on both, so the same archive names the same latest checkpoint."""
    fake = fakes.small_org()
    (job_id,) = fake.job_ids()
    (dated,) = fake.checkpoints(job_id)
    undated = fake.add_checkpoint(job_id)  # the newer one, until its date is gone
    assert fakes.sync(archive, fake).exit_code == 0
    with archive.begin() as connection:  # a null the API can no longer bring in
        connection.execute(
            sa.text("UPDATE checkpoints SET created_at = NULL WHERE checkpoint_id = :c"),
            {"c": undated["checkpoint_id"]},
        )
        facts.refresh(connection)
    assert rows(archive, "SELECT latest_checkpoint_id FROM job_facts") == [(dated["checkpoint_id"],)]


def test_gpu_hours_of_a_large_instance_do_not_overflow(archive: Engine) -> None:
    # PostgreSQL multiplied gpu_count by node_count as 32-bit integers: one job on an
    # instance with 2^31 - 1 GPUs (a value the archive stores) made every read of job_facts fail
    # with "integer out of range".
    job = copy.deepcopy(JOB)
    job["instance_type"] = {**job["instance_type"], "id": "huge", "gpu_count": 2**31 - 1}
    body = {"training_job": job, "checkpoints": copy.deepcopy(CHECKPOINTS)}
    assert not fakes.sync(archive, fakes.one_listing(project_for("n4q95w5", "p"), job, body)).failures
    with archive.connect() as connection:
        (row,) = connection.execute(sa.select(job_facts.c.gpu_count, job_facts.c.gpu_hours_estimate)).all()
    hours = (13 * 60 + 2 + 51 / 60 - (11 * 60 + 58 + 40 / 60)) / 60
    assert row.gpu_count == 2**31 - 1
    assert row.gpu_hours_estimate == pytest.approx((2**31 - 1) * 2 * hours, rel=1e-6)


def test_views_and_reports_survive_sizes_that_sum_past_64_bits(database_url: str, archive: Engine) -> None:
    # The archive stores any size up to 2^63 - 1 (README: "sizes beyond 2^53" are stored as received);
    # two such checkpoints in one job made job_facts, project_storage_daily and `report storage`
    # fail for the whole organisation.
    job = copy.deepcopy(JOB)
    checkpoints = [{**c, "size_bytes": 2**62} for c in copy.deepcopy(CHECKPOINTS)]
    body = {"training_job": job, "checkpoints": checkpoints}
    assert not fakes.sync(archive, fakes.one_listing(project_for("n4q95w5", "p"), job, body)).failures
    for view in ("job_facts", "project_storage_daily"):
        result = run_archiver(
            "query", "--format", "json", f"SELECT * FROM {view}", env={"ARCHIVER_DATABASE_URL": database_url}
        )
        assert result.exit_code == 0, result.output
    result = run_archiver(
        "report", "storage", "--format", "json", env={"ARCHIVER_DATABASE_URL": database_url}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["live_size_bytes"] == pytest.approx(2**63)


def test_hours_print_the_same_digits_on_both_databases(database_url: str, archive: Engine) -> None:
    """SQLite computed hours with julianday, and printed float noise (11.200000047683716 where
    PostgreSQL printed 11.2): both now divide whole microseconds, so they print the same digits."""
    job = {**copy.deepcopy(JOB), "created_at": "2026-05-14T11:58:40Z", "updated_at": "2026-05-14T13:22:40Z"}
    checkpoints = copy.deepcopy(CHECKPOINTS)
    checkpoints[0]["created_at"] = "2026-05-14T12:31:09.654321Z"
    body = {"training_job": job, "checkpoints": checkpoints}
    assert not fakes.sync(archive, fakes.one_listing(project_for("n4q95w5", "p"), job, body)).failures
    columns = "wall_clock_hours, gpu_hours_estimate, hours_to_first_checkpoint"
    result = run_archiver(
        "query",
        "--format",
        "json",
        f"SELECT {columns} FROM job_facts",
        env={"ARCHIVER_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    first = datetime(2026, 5, 14, 12, 31, 9, 654321, tzinfo=UTC) - datetime(
        2026, 5, 14, 11, 58, 40, tzinfo=UTC
    )
    printed = [line.strip() for line in result.stdout.splitlines()]
    assert (
        '"wall_clock_hours": 1.4,' in printed and '"gpu_hours_estimate": 22.4,' in printed
    )  # 8 GPUs, 2 nodes
    assert json.loads(result.stdout)[0]["hours_to_first_checkpoint"] == first / HOUR


def test_job_status_since_is_when_the_api_says_a_finished_job_finished(archive: Engine) -> None:
    """A job that failed months before the archive first saw it had been failed "for an hour":
    for a finished job, job_status_since is now its updated_at in the version that first had the
    status, no earlier than the sighting of the status before, no later than its own sighting."""
    fake = fakes.small_org(projects=4)
    old, finished, muddled, running = fake.job_ids()
    fake.set_job(old, current_status="TRAINING_JOB_FAILED", updated_at="2026-01-20T08:00:00Z")
    for job_id in (finished, muddled, running):
        fake.set_job(job_id, current_status="TRAINING_JOB_RUNNING", updated_at="2026-05-31T22:00:00Z")
    nights = (datetime(2026, 6, 1, 3, tzinfo=UTC), datetime(2026, 6, 2, 3, tzinfo=UTC))
    assert fakes.sync(archive, fake, clock=lambda: nights[0]).exit_code == 0
    fake.set_job(finished, current_status="TRAINING_JOB_COMPLETED", updated_at="2026-06-01T17:45:00Z")
    # An updated_at older than the RUNNING the archive saw: the API's word cannot be right.
    fake.set_job(muddled, current_status="TRAINING_JOB_FAILED", updated_at="2026-05-31T23:00:00Z")
    assert fakes.sync(archive, fake, SyncOptions(full=True), clock=lambda: nights[1]).exit_code == 0
    with archive.connect() as connection:
        query = sa.select(job_facts.c.job_id, job_facts.c.job_status_since, job_facts.c.hours_in_status)
        found = {job_id: (since, hours) for job_id, since, hours in connection.execute(query)}
    assert {job_id: since for job_id, (since, _) in found.items()} == {
        old: datetime(2026, 1, 20, 8, tzinfo=UTC),
        finished: datetime(2026, 6, 1, 17, 45, tzinfo=UTC),
        muddled: nights[0],
        running: nights[0],
    }
    hours = (datetime.now(UTC) - datetime(2026, 1, 20, 8, tzinfo=UTC)) / HOUR
    assert found[old][1] == pytest.approx(hours, abs=0.05)


def test_lora_target_modules_read_as_text_bi_tools_can_group_by(archive: Engine) -> None:
    """A JSON column cannot be grouped or filtered in a BI tool: `lora_target_modules_text` holds
    the module names sorted by code point, each once, joined with commas; a regex as it is."""
    fake = fakes.small_org()
    (job_id,) = fake.job_ids()
    regex = r".*\.(self_attn|mlp)\.(q|k|v|o)_proj"
    for step, modules in enumerate((["v_proj", "Wqkv", "q_proj", "q_proj"], regex, []), 1):
        lora = {"base_model_name_or_path": "Qwen/Qwen3-8B", "r": 8, "target_modules": modules}
        fake.add_checkpoint(
            job_id, checkpoint_type="lora", lora_adapter_config=lora, checkpoint_id=f"a-{step}"
        )
    assert fakes.sync(archive, fake).exit_code == 0
    found = rows(
        archive,
        "SELECT checkpoint_id, lora_target_modules_text FROM checkpoint_facts "
        "WHERE lora_target_modules_text IS NOT NULL ORDER BY checkpoint_id",
    )
    assert found == [("a-1", "Wqkv,q_proj,v_proj"), ("a-2", regex), ("a-3", "")]


def gpu_days(archive: Engine) -> dict[str, dict[date, tuple[float, float]]]:
    """job -> day -> (hours, gpu_hours), read through the typed view."""
    found: dict[str, dict[date, tuple[float, float]]] = {}
    with archive.connect() as connection:
        for row in connection.execute(sa.select(gpu_hours_daily)):
            found.setdefault(row.job_id, {})[row.day] = (row.hours, row.gpu_hours)
    return found


def test_gpu_hours_daily_splits_a_run_across_its_utc_days(archive: Engine) -> None:
    """`job_facts` put a whole run in its creation month and gave nothing for running jobs."""
    finished, running = copy.deepcopy(JOB), copy.deepcopy(JOB)
    eight_by_two = {**JOB["instance_type"], "id": "H100:2x8x80x1000", "gpu_count": 8}
    finished.update(
        id="finished",
        current_status="TRAINING_JOB_COMPLETED",
        created_at="2026-11-29T22:00:00Z",
        updated_at="2026-12-01T02:00:00Z",
        instance_type=eight_by_two,
        node_count=2,
    )
    running.update(id="running", current_status="TRAINING_JOB_RUNNING", created_at="2026-12-01T12:00:00Z")
    project = project_for("n4q95w5", "p")
    fake = FakeBaseten(OrgSpec(projects=0))
    base = f"/v1/training_projects/{project['id']}"
    fake.override("GET", "/v1/training_projects", body={"training_projects": [project]})
    fake.override(
        "GET", f"{base}/jobs", body={"training_project": project, "training_jobs": [finished, running]}
    )
    for job in (finished, running):
        fake.override(
            "GET", f"{base}/jobs/{job['id']}/checkpoints", body={"training_job": job, "checkpoints": []}
        )
    synced = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    assert fakes.sync(archive, fake, clock=lambda: synced).exit_code == 0
    days = gpu_days(archive)
    gpus = JOB["instance_type"]["gpu_count"] * JOB["node_count"]
    assert days["finished"] == {
        date(2026, 11, 29): (2.0, 32.0),
        date(2026, 11, 30): (24.0, 384.0),
        date(2026, 12, 1): (2.0, 32.0),
    }
    # Running: counted up to the sync that saw it, on the nodes it sent.
    assert days["running"] == {date(2026, 12, 1): (12.0, 12.0 * gpus), date(2026, 12, 2): (6.0, 6.0 * gpus)}
    with archive.connect() as connection:
        query = sa.select(job_facts.c.job_id, job_facts.c.gpu_hours_estimate)
        estimates = {job_id: estimate for job_id, estimate in connection.execute(query)}
    assert estimates["finished"] == pytest.approx(sum(g for _, g in days["finished"].values()))
    assert estimates["running"] is None  # job_facts had no answer for a running job


def test_project_label_is_unique_and_is_uploaded_reads_every_spelling(archive: Engine) -> None:
    """Two projects named alike were one bar in a chart; upload states came as COMPLETE, COMPLETED and empty."""
    twin_a, twin_b = project_for("twin0001", "same-name"), project_for("twin0002", "same-name")
    alone = project_for("alone001", "unique-name")
    fake = FakeBaseten(OrgSpec(projects=0))
    fake.override("GET", "/v1/training_projects", body={"training_projects": [twin_a, twin_b, alone]})
    states = ["COMPLETE", "completed", "", None, "SYNCING"]
    for project in (twin_a, twin_b, alone):
        job = {**copy.deepcopy(JOB), "id": f"job-{project['id']}", "training_project_id": project["id"]}
        base = f"/v1/training_projects/{project['id']}"
        fake.override("GET", f"{base}/jobs", body={"training_project": project, "training_jobs": [job]})
        listed = []
        for n, state in enumerate(states):
            checkpoint = {
                **copy.deepcopy(CHECKPOINTS[0]),
                "checkpoint_id": f"checkpoint-{n}",
                "sync_status": state,
            }
            checkpoint["training_job_id"] = job["id"]
            listed.append(checkpoint)
        fake.override(
            "GET", f"{base}/jobs/{job['id']}/checkpoints", body={"training_job": job, "checkpoints": listed}
        )
    assert fakes.sync(archive, fake).exit_code == 0
    expected = {
        "twin0001": "same-name (twin0001)",
        "twin0002": "same-name (twin0002)",
        "alone001": "unique-name",
    }
    with archive.connect() as connection:
        for view in (checkpoint_facts, job_facts, project_storage_daily):
            labels = dict(
                connection.execute(sa.select(view.c.project_id, view.c.project_label).distinct()).all()
            )
            assert labels == expected, view.name
        uploaded = connection.execute(
            sa.select(checkpoint_facts.c.checkpoint_id, checkpoint_facts.c.is_uploaded).where(
                checkpoint_facts.c.project_id == "alone001"
            )
        ).all()
    assert dict(uploaded) == {
        "checkpoint-0": True,
        "checkpoint-1": True,
        "checkpoint-2": None,
        "checkpoint-3": None,
        "checkpoint-4": False,
    }


def test_lora_target_modules_are_one_type_and_a_long_table_by_module(archive: Engine) -> None:
    """`lora_target_modules` held lists and strings (polars failed on it); modules could not be grouped by."""
    fake = fakes.small_org()
    (job_id,) = fake.job_ids()
    regex = r".*\.(q|v)_proj"
    for step, modules in enumerate((["v_proj", "q_proj"], regex, []), 1):
        lora = {"base_model_name_or_path": "Qwen/Qwen3-8B", "r": 8, "target_modules": modules}
        fake.add_checkpoint(
            job_id, checkpoint_type="lora", lora_adapter_config=lora, checkpoint_id=f"a-{step}"
        )
    assert fakes.sync(archive, fake).exit_code == 0
    with archive.connect() as connection:
        facts = connection.execute(
            sa.select(checkpoint_facts.c.checkpoint_id, checkpoint_facts.c.lora_target_modules)
            .where(checkpoint_facts.c.checkpoint_id.like("a-%"))
            .order_by(checkpoint_facts.c.checkpoint_id)
        ).all()
        long = connection.execute(
            sa.select(checkpoint_lora_modules.c.checkpoint_id, checkpoint_lora_modules.c.module)
            .where(checkpoint_lora_modules.c.checkpoint_id.like("a-%"))
            .order_by(checkpoint_lora_modules.c.checkpoint_id, checkpoint_lora_modules.c.module)
        ).all()
    assert [tuple(row) for row in facts] == [("a-1", ["v_proj", "q_proj"]), ("a-2", [regex]), ("a-3", [])]
    assert [tuple(row) for row in long] == [("a-1", "q_proj"), ("a-1", "v_proj"), ("a-2", regex)]


def test_postgresql_analyzes_checkpoint_facts_whole_after_a_first_load_and_not_again_on_a_quiet_night(
    postgres_url: str,
) -> None:
    """Once a tenth of `checkpoint_facts` changed, a refresh analyzes it whole, which starts the
    server's count of changes again: a night that changed nothing analyzes it no more. (An `ANALYZE` of
    some columns leaves that count as it was: analyzed by `job_id` after a first load, from 1b84321 to
    2dc600b, it was analyzed again, whole, on the first night.)"""
    engine = db.make_engine(postgres_url)
    analyzed: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.startswith("ANALYZE"):
            analyzed.append(statement)

    def changes_counted(enough: Callable[[int], bool]) -> int:
        """`checkpoint_facts`' changes since its last ANALYZE, once the server counts those of the sync."""
        engine.dispose()  # a backend that ends reports what it changed
        deadline = time.monotonic() + 10
        while True:
            with engine.connect() as connection:
                query = (
                    "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'checkpoint_facts'"
                )
                counted = int(connection.exec_driver_sql(query).scalar_one())
            if enough(counted) or time.monotonic() > deadline:
                return counted
            time.sleep(0.1)

    def facts_analyzed() -> list[str]:
        found = [
            part
            for statement in analyzed
            for part in statement.removeprefix("ANALYZE ").split(", ")
            if "checkpoint_facts" in part
        ]
        analyzed.clear()
        return found

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        migrate.upgrade(engine)  # its refresh finds the table empty, with no statistics
        assert facts_analyzed() == ["public.checkpoint_facts"]
        fake = FakeBaseten(
            OrgSpec(projects=2, jobs_per_project=25, checkpoints_per_job=50, active_fraction=0)
        )
        assert fakes.sync(engine, fake).exit_code == 0  # the first load
        assert set(facts_analyzed()) <= {"public.checkpoint_facts"}  # (if its refresh saw the count in time)
        with engine.begin() as connection:  # every row changed, as a first load writes them
            connection.exec_driver_sql("UPDATE checkpoint_facts SET job_id = job_id")
        assert changes_counted(lambda n: n > 1000) > 1000
        with engine.begin() as connection:  # the refresh of a run that wrote them as it went
            written = frozenset(fake.job_ids())
            facts.refresh(
                connection, keep_unchanged=True, current=facts.Current(written, facts.Inputs.of(connection))
            )
        assert facts_analyzed() == ["public.checkpoint_facts"]  # whole, not by job_id
        assert changes_counted(lambda n: n == 0) == 0  # the count starts again
        assert fakes.sync(engine, fake).exit_code == 0  # nothing changed: nothing written
        assert facts_analyzed() == []
        assert fakes.sync(engine, fake).exit_code == 0
        assert facts_analyzed() == []
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
        engine.dispose()
