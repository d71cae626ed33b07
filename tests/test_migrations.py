"""The schema is owned by Alembic: revisions apply, revert and match archiver.schema."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from archiver import db, docs, drain, facts, migrate, snapshot, views
from archiver.errors import SchemaOutOfDate
from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.schema import SCHEMA_REVISION, checkpoints, metadata
from archiver.sync import SyncOptions

from .conftest import scalar
from .support.archive_dump import stored_timestamps
from .support.commands import run_archiver
from .support.databases import rows
from .support.fakes import sync
from .support.orgs import NIGHTS, archive_org

REPO = Path(__file__).resolve().parent.parent


def archive_tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_one_head_and_every_revision_explains_itself() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    assert len(scripts.get_heads()) == 1
    # The fast schema gate compares with this constant instead of reading the revision files.
    assert scripts.get_current_head() == SCHEMA_REVISION
    for script in scripts.walk_revisions():
        assert script.doc and "Why:" in (script.module.__doc__ or ""), script.revision


def test_upgrade_downgrade_upgrade(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert archive_tables(engine) == set(metadata.tables) | facts.NAMES
    assert migrate.current_revision(engine) == SCHEMA_REVISION
    migrate.downgrade(engine, "base")
    assert archive_tables(engine) == set()
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert archive_tables(engine) == set(metadata.tables) | facts.NAMES


def test_each_revision_steps_down_and_up(engine: Engine) -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    for revision in revisions:
        migrate.upgrade(engine, revision)
        assert migrate.current_revision(engine) == revision
    for revision in reversed(revisions):
        migrate.downgrade(engine, revision)
        migrate.downgrade(engine, "-1")
        migrate.upgrade(engine, revision)
        assert migrate.current_revision(engine) == revision


def schema_differences(engine: Engine, target: sa.MetaData) -> list[object]:
    """What Alembic's autogenerate finds between the database and `target`: types and server defaults too."""
    with engine.connect() as connection:
        options = {
            "compare_type": True,
            "compare_server_default": True,
            "include_name": facts.modelled,
        }
        return list(compare_metadata(MigrationContext.configure(connection, opts=options), target))


def test_models_match_migrations(archive: Engine) -> None:
    assert schema_differences(archive, metadata) == []


def test_a_changed_server_default_is_a_difference(archive: Engine) -> None:
    changed = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["sync_runs"].c.requests.server_default = sa.DefaultClause("1")
    differences = schema_differences(archive, changed)
    assert len(differences) == 1 and "modify_default" in repr(differences), differences


Comments = dict[str, dict[str | None, object]]


def comments(engine: Engine) -> Comments:
    """Each table's and view's PostgreSQL comment (under None) and its columns', read back from the catalog."""
    found: Comments = {}
    for relation, relation_comment, column, column_comment in rows(
        engine,
        "SELECT c.relname, obj_description(c.oid, 'pg_class'), a.attname, col_description(c.oid, a.attnum) "
        "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('public', 'archiver_internal')) "
        "AND c.relkind IN ('r', 'v') "
        "AND c.relname <> 'alembic_version'",
    ):
        assert isinstance(relation, str) and isinstance(column, str)
        found.setdefault(relation, {None: relation_comment})[column] = column_comment
    return found


DESCRIBED: Comments = {
    table.name: {None: table.comment, **{column.name: column.comment for column in table.columns}}
    for table in docs.OBJECTS
}


def test_postgresql_carries_every_description_after_each_migration(postgres_url: str) -> None:
    engine = db.make_engine(postgres_url)
    migrate.upgrade(engine)
    assert comments(engine) == DESCRIBED
    # A step back leaves fewer objects and columns: each still described as the code describes it.
    # (Back past revisions that change no description, such as 0011's SQLite timestamps, 0017's
    # move of the bookkeeping to its schema, 0020-0026's indexes and views, or 0027's index.)
    stepped_back = DESCRIBED
    for _ in range(12):
        migrate.downgrade(engine, "-1")
        if (stepped_back := comments(engine)) != DESCRIBED:
            break
    assert stepped_back != DESCRIBED and stepped_back.keys() <= DESCRIBED.keys()
    for name, found in stepped_back.items():
        assert found == {key: DESCRIBED[name][key] for key in found}, name
    migrate.upgrade(engine)
    assert comments(engine) == DESCRIBED
    engine.dispose()


def test_db_upgrade_at_the_newest_revision_brings_descriptions_up_to_date(postgres_url: str) -> None:
    engine = db.make_engine(postgres_url)
    migrate.upgrade(engine)
    with engine.begin() as connection:  # as an archive described by an older archiver would be
        connection.exec_driver_sql("COMMENT ON TABLE job_facts IS 'old words'")
        connection.exec_driver_sql("COMMENT ON COLUMN checkpoints.size_bytes IS NULL")
    result = run_archiver("db", "upgrade", "--database-url", postgres_url)
    assert result.exit_code == 0, result.output
    assert comments(engine) == DESCRIBED
    engine.dispose()


def test_released_revisions_are_frozen() -> None:
    """A revision that has landed never changes: an archive already at it would never see the edit."""
    migrations = REPO / "migrations"
    released = {}
    for line in (migrations / "released.sha256").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        released[name] = digest
    for path in sorted((migrations / "versions").glob("*.py")):
        name = path.relative_to(migrations).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert name in released, (
            f"{name} is not in migrations/released.sha256; when it lands, record it: "
            f"(cd migrations && sha256sum {name} >> released.sha256)"
        )
        assert released[name] == digest, (
            f"{name} changed after it was released; a change to a released schema is a new revision"
        )


def test_empty_database_gets_the_schema(engine: Engine) -> None:
    migrate.ensure_current(engine)
    assert migrate.current_revision(engine) == SCHEMA_REVISION


def sqlite_shape(engine: Engine) -> dict[tuple[str, str], object]:
    """A SQLite database's schema and rows, object by object, as the revisions decide it: each table's
    columns in order, its foreign keys, the lines of its definition in any order (Alembic's batch mode
    writes a rebuilt table's constraints in an order of its own), its rows (`facts_inputs`' without the
    moment of their refresh); each index's, view's and trigger's definition."""
    shape: dict[tuple[str, str], object] = {}
    with engine.connect() as connection:
        run = connection.exec_driver_sql
        for kind, name, table, sql in run(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite%'"
        ):
            if kind != "table":
                shape[kind, name] = (table, sql)
                continue
            columns = "name, inputs" if name == "facts_inputs" else "*"
            shape[kind, name] = (
                run(f'PRAGMA table_xinfo("{name}")').all(),
                sorted(tuple(row)[1:] for row in run(f'PRAGMA foreign_key_list("{name}")')),
                sorted(line.strip().removesuffix(",").strip() for line in sql.splitlines()),
                sorted(tuple(row) for row in run(f'SELECT {columns} FROM "{name}"')),
            )
    return shape


def test_a_new_sqlite_archive_is_made_from_the_snapshot_as_the_revisions_make_it(
    engine: Engine, tmp_path: Path
) -> None:
    """`archiver.snapshot`: a new SQLite archive is made from migrations/sqlite-head.sql, which must be
    the newest revision's and make what the revisions make; a PostgreSQL one is left to the revisions."""
    made = snapshot.create(engine, migrate.script_location())
    if engine.dialect.name != "sqlite":
        assert not made and archive_tables(engine) == set()
        return
    text = (Path(migrate.script_location()) / snapshot.FILENAME).read_text()
    assert snapshot.revision_of(text) == SCHEMA_REVISION, (
        "migrations/sqlite-head.sql is of another revision: run `python -m archiver.snapshot`"
    )
    assert made and migrate.current_revision(engine) == SCHEMA_REVISION
    by_revisions = db.make_engine(f"sqlite:///{tmp_path / 'by-revisions.db'}")
    try:
        migrate.upgrade(by_revisions)
        assert sqlite_shape(engine) == sqlite_shape(by_revisions), (
            "migrations/sqlite-head.sql makes another schema than the revisions: run `python -m archiver.snapshot`"
        )
    finally:
        by_revisions.dispose()
    assert schema_differences(engine, metadata) == []
    # The revisions step an archive made so down and up as one they made (as the next revision will).
    migrate.downgrade(engine, "-1")
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == SCHEMA_REVISION and schema_differences(engine, metadata) == []
    # And it takes a first sync.
    assert (
        sync(engine, FakeBaseten(OrgSpec(projects=1, jobs_per_project=2, checkpoints_per_job=3))).exit_code
        == 0
    )
    written = scalar(engine, "SELECT count(*) FROM checkpoints")
    assert written and scalar(engine, "SELECT count(*) FROM checkpoint_facts") == written


def test_a_snapshot_of_another_revision_or_none_is_not_used(tmp_path: Path) -> None:
    """A snapshot left behind by a new revision, or none at all: the revisions make the archive."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'archive.db'}")
    try:
        assert not snapshot.create(engine, tmp_path)  # no snapshot there
        text = (Path(migrate.script_location()) / snapshot.FILENAME).read_text()
        older = text.replace(f"revision {SCHEMA_REVISION}\n", "revision 0028\n", 1)
        assert snapshot.revision_of(older) == "0028"
        (tmp_path / snapshot.FILENAME).write_text(older)
        assert not snapshot.create(engine, tmp_path)
        assert archive_tables(engine) == set()
    finally:
        engine.dispose()


def test_older_schema_is_refused_with_the_fix(engine: Engine) -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    migrate.upgrade(engine, revisions[-2])
    with pytest.raises(SchemaOutOfDate, match="archiver db upgrade"):
        migrate.ensure_current(engine)
    migrate.ensure_current(engine, migrate=True)
    assert migrate.current_revision(engine) == SCHEMA_REVISION


def alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `alembic` command from the repository root on `database_url`."""
    env = {**os.environ, "ARCHIVER_DATABASE_URL": database_url}
    command = [str(Path(sys.executable).parent / "alembic"), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_alembic_command_from_repo_root_reads_the_environment(database_url: str) -> None:
    done = alembic(database_url, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert scalar(engine, "SELECT version_num FROM alembic_version") == SCHEMA_REVISION
    finally:
        engine.dispose()


@pytest.mark.parametrize("target", ["base", "-1"])
def test_alembic_downgrade_is_refused_and_sends_to_the_guarded_command(
    database_url: str, target: str
) -> None:
    """`alembic downgrade base` would drop every table, rows and all, without the guard of
    `archiver db downgrade`: it is refused, naming the command that says what would go."""
    assert alembic(database_url, "upgrade", "head").returncode == 0
    done = alembic(database_url, "downgrade", target)
    assert done.returncode != 0
    suggested = f"archiver db downgrade {'-- ' if target.startswith('-') else ''}{target}"
    assert f"run `{suggested}` instead" in done.stdout + done.stderr
    engine = db.make_engine(database_url)
    try:
        assert scalar(engine, "SELECT version_num FROM alembic_version") == SCHEMA_REVISION
    finally:
        engine.dispose()


def test_alembic_writes_descriptions_and_never_drafts_a_revision_for_their_wording(postgres_url: str) -> None:
    assert alembic(postgres_url, "upgrade", "head").returncode == 0
    engine = db.make_engine(postgres_url)
    assert comments(engine) == DESCRIBED
    with engine.begin() as connection:  # code whose wording has moved on since the last migration
        connection.exec_driver_sql("COMMENT ON TABLE checkpoints IS 'old words'")
        connection.exec_driver_sql("COMMENT ON COLUMN checkpoints.size_bytes IS 'old words'")
    engine.dispose()
    done = alembic(postgres_url, "check")
    assert done.returncode == 0 and "No new upgrade operations detected" in done.stdout, done.stderr


def test_revisions_0007_and_0011_respell_sqlite_timestamps_and_back(archive: Engine) -> None:
    """0007 rewrote every SQLite timestamp, history tables included, from naive text to ISO 8601 with
    its offset; 0011 writes them back as `2026-01-05 21:17:36.000000`, the text BI tools' literals
    compare with. Each downgrade restores the spelling before it; PostgreSQL's timestamptz values are
    left alone."""
    archive_org(archive)
    current = stored_timestamps(archive)
    migrate.downgrade(archive, "0010")
    with_offset = stored_timestamps(archive)
    migrate.downgrade(archive, "0006")
    older = stored_timestamps(archive)
    if archive.dialect.name == "sqlite":
        spelled = {
            column: [
                None if text is None else f"{str(text)[:10]}T{str(text)[11:26]}+00:00" for text in values
            ]
            for column, values in current.items()
        }
        assert with_offset == spelled and with_offset != current
        assert older == {column: values for column, values in current.items() if column in older}
    else:
        assert with_offset == current
        assert older == {column: values for column, values in current.items() if column in older}
    migrate.upgrade(archive)
    assert stored_timestamps(archive) == current


def rows_down_and_up(archive: Engine, query: str, revision: str) -> tuple[list[Any], list[Any], list[Any]]:
    """`query`'s rows, sorted: at the head, after a downgrade to `revision`, and after the upgrade back."""
    at_head = sorted(rows(archive, query), key=repr)
    migrate.downgrade(archive, revision)
    below = sorted(rows(archive, query), key=repr)
    migrate.upgrade(archive)
    return at_head, below, sorted(rows(archive, query), key=repr)


def stopped_at(instant: datetime) -> Callable[[], datetime]:
    """A clock that always says `instant`."""
    return lambda: instant


def undate_and_tie(connection: sa.Connection) -> None:
    """The edges of the latest checkpoint's order: an undated checkpoint, and jobs' first checkpoints
    sharing one date with the latest of all."""
    connection.execute(
        sa.text("UPDATE checkpoints SET created_at = NULL WHERE id IN (SELECT MAX(id) FROM checkpoints)")
    )
    connection.execute(
        sa.text(
            "UPDATE checkpoints SET created_at = (SELECT MAX(created_at) FROM checkpoints) "
            "WHERE id IN (SELECT MIN(id) FROM checkpoints GROUP BY training_job_id)"
        )
    )


def test_revision_0021_finds_the_same_latest_checkpoints_and_keeps_the_view_readable(archive: Engine) -> None:
    """0021 looks up each job's latest checkpoint through an index instead of ranking every checkpoint:
    `job_facts_live` names the same checkpoint for every job as before, ties and undated ones included,
    and on PostgreSQL the view is replaced where it is (its schema, its grants)."""
    archive_org(archive)
    with archive.begin() as connection:
        undate_and_tie(connection)
    query = "SELECT job_id, latest_checkpoint_id, latest_checkpoint_size_bytes FROM job_facts_live ORDER BY job_id"
    after = rows(archive, query)
    migrate.downgrade(archive, "0020")
    before = rows(archive, query)
    postgresql = archive.dialect.name == "postgresql"
    if postgresql:
        with archive.begin() as connection:
            connection.execute(sa.text("GRANT SELECT ON job_facts_live TO PUBLIC"))
    migrate.upgrade(archive)
    assert rows(archive, query) == after == before
    assert any(latest is not None for _, latest, _ in before)
    if postgresql:
        grants = "SELECT has_table_privilege('public', 'archiver_internal.job_facts_live', 'SELECT')"
        assert scalar(archive, grants) is True


def test_revision_0028_gives_the_same_job_facts_whether_asked_for_all_jobs_or_a_few(archive: Engine) -> None:
    """0028 works out each job's checkpoint totals and latest checkpoint for the jobs a query keeps only:
    `job_facts_live` gives every job the same row as 0027's view, read whole or for a few jobs, over a job
    with deleted checkpoints, one without any, and undated and tied checkpoints; on PostgreSQL the view
    is replaced where it is (its schema, its grants)."""
    archive_org(archive)
    with archive.begin() as connection:
        undate_and_tie(connection)
        live = (  # jobs not gone, with two live checkpoints or more
            "SELECT c.training_job_id FROM checkpoints c JOIN training_jobs j ON j.id = c.training_job_id "
            "JOIN training_projects p ON p.id = j.training_project_id WHERE c.deleted_at IS NULL "
            "AND j.deleted_at IS NULL AND p.deleted_at IS NULL GROUP BY c.training_job_id HAVING COUNT(*) > 1"
        )
        jobs = sorted(job for (job,) in connection.execute(sa.text(live)))
        deleted, emptied = jobs[:2]
        connection.execute(
            sa.text(
                "UPDATE checkpoints SET deleted_at = last_seen_at WHERE training_job_id = :job "
                "AND id > (SELECT MIN(id) FROM checkpoints WHERE training_job_id = :job)"
            ),
            {"job": deleted},
        )
        connection.execute(sa.text("DELETE FROM checkpoints WHERE training_job_id = :job"), {"job": emptied})
        facts.refresh(connection)  # the totals are of `checkpoint_facts`, which a sync keeps
    # Every column but the two counted up to the moment of the query.
    columns = [
        c.name for c in views.job_facts.columns if c.name not in ("hours_in_status", "hours_since_update")
    ]
    whole = f"SELECT {', '.join(columns)} FROM job_facts_live"
    few = f"{whole} WHERE job_id IN ('{deleted}', '{emptied}')"
    after, before, again = rows_down_and_up(archive, whole, "0027")
    assert again == after == before and len(after) > 2
    few_after, few_before, _ = rows_down_and_up(archive, few, "0027")
    assert few_after == few_before == [row for row in after if row[0] in (deleted, emptied)]
    by_job = {row[0]: dict(zip(columns, row, strict=True)) for row in after}
    assert by_job[emptied]["checkpoint_count"] == 0 and by_job[emptied]["latest_checkpoint_id"] is None
    assert 0 < by_job[deleted]["live_checkpoint_count"] < by_job[deleted]["checkpoint_count"]
    if archive.dialect.name == "postgresql":
        with archive.begin() as connection:
            connection.execute(sa.text("GRANT SELECT ON job_facts_live TO PUBLIC"))
        migrate.downgrade(archive, "0027")
        migrate.upgrade(archive)
        grants = "SELECT has_table_privilege('public', 'archiver_internal.job_facts_live', 'SELECT')"
        assert scalar(archive, grants) is True


def test_revision_0022_counts_the_same_storage_from_each_checkpoints_history(archive: Engine) -> None:
    """0022 tells a checkpoint's first version by its history instead of grouping every version:
    `project_storage_daily_live` counts the same checkpoints and bytes on every day as before, over
    checkpoints with several versions (changed, deleted) and with one."""
    org = archive_org(archive)
    fake = org.fake
    job = next(j for j in fake.job_ids() if fake.checkpoints(j))
    changed = fake.checkpoints(job)[0]  # a third version, live: a first one and one after it
    fake.update_checkpoint(job, changed["checkpoint_id"], size_bytes=changed["size_bytes"] + 1)
    later = NIGHTS[1] + timedelta(days=3)
    assert sync(archive, fake, SyncOptions(full=True), clock=lambda: later).exit_code == 0
    assert rows(archive, "SELECT id FROM checkpoint_history LIMIT 1")
    query = "SELECT project_id, day, team_name, live_checkpoint_count, live_size_bytes FROM project_storage_daily_live"
    after, before, again = rows_down_and_up(archive, query, "0021")
    assert again == after == before
    assert any(count for _, _, _, count, _ in before)


def test_revision_0025_charges_each_day_to_the_same_team_as_before(archive: Engine) -> None:
    """0025 finds each day's team by joining the spans of the project's versions instead of three
    subqueries a row: `project_storage_daily_live` names the same team on every day as before, for
    projects that changed teams (days before the archive, on the day of each change and after) and
    for those that never did."""
    org = archive_org(archive)
    fake = org.fake
    moved, renamed = fake.project_ids()[:2]
    midnight = datetime.combine(NIGHTS[1].date() + timedelta(days=5), datetime.min.time(), UTC)
    nights = {"research": NIGHTS[1] + timedelta(days=3, hours=3), "platform": midnight}
    for team, night in [*nights.items(), ("research", midnight + timedelta(days=4, hours=9))]:
        fake.set_project(moved, team_name=team)  # begun at midnight: from that day, not the day before
        fake.set_project(renamed, name=f"renamed {night}")  # a new version, the same team
        assert sync(archive, fake, SyncOptions(full=True), clock=stopped_at(night)).exit_code == 0
    versions = "SELECT COUNT(*) FROM training_project_versions WHERE id = :p"
    assert all(int(str(rows(archive, versions, p=p)[0][0])) >= 4 for p in (moved, renamed))
    query = "SELECT project_id, day, team_name, live_checkpoint_count, live_size_bytes FROM project_storage_daily_live"
    after, before, again = rows_down_and_up(archive, query, "0024")
    assert again == after == before
    assert len({team for project_id, _, team, _, _ in after if project_id == moved}) == 3


def plan_of(connection: sa.Connection, statement: str, parameters: Any, *, driver: bool = False) -> str:
    """How the database answers `statement` (SQLAlchemy text, or the driver's own with `driver`), as its
    EXPLAIN prints it; on PostgreSQL with sequential scans priced out, as on an archive too large to read whole."""
    sqlite = connection.dialect.name == "sqlite"
    if not sqlite:
        connection.exec_driver_sql("SET enable_seqscan = off")
    explain = f"{'EXPLAIN QUERY PLAN' if sqlite else 'EXPLAIN'} {statement}"
    if driver:
        plan = connection.exec_driver_sql(explain, parameters).all()
    else:
        plan = connection.execute(sa.text(explain), parameters).all()
    return "\n".join(str(row[-1]) for row in plan)


def drain_check_plan(archive: Engine) -> str:
    """How the database answers the nightly drain check (`drain._lost_enough`), as `plan_of` says."""
    asked: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        asked.append((statement, parameters))

    with archive.connect() as connection:
        sa.event.listen(connection, "before_cursor_execute", keep)
        drain._lost_enough(connection, datetime.now(UTC) - timedelta(days=7))
        sa.event.remove(connection, "before_cursor_execute", keep)
        ((statement, parameters),) = [(text, values) for text, values in asked if text.startswith("SELECT")]
        return plan_of(connection, statement, parameters, driver=True)


def test_revision_0027_answers_the_drain_check_from_the_deleted_checkpoints_alone(archive: Engine) -> None:
    """0027 indexes the checkpoints marked deleted, and those alone: the check every sync makes for jobs
    and projects draining away reads that index instead of every checkpoint, and still finds a drain."""
    org = archive_org(archive)
    project = org.fake.project_ids()[0]
    assert "ix_checkpoints_deleted_at" in drain_check_plan(archive)
    of_project = checkpoints.c.training_job_id.in_(org.fake.job_ids(project))
    with archive.begin() as connection:  # every checkpoint of one project, marked deleted yesterday
        connection.execute(
            sa.update(checkpoints).where(of_project).values(deleted_at=datetime.now(UTC) - timedelta(days=1))
        )
        held = connection.scalar(sa.select(sa.func.count()).where(of_project))
    assert held and held >= drain.MASS
    with archive.connect() as connection:
        found = drain.draining(connection, datetime.now(UTC), drain.DEFAULT_DRAIN_WINDOW)
    assert [(d.id, d.lost, d.held) for d in found if d.scope == "project"] == [(project, held, held)]

    migrate.downgrade(archive, "0026")
    assert "ix_checkpoints_deleted_at" not in drain_check_plan(archive)
    migrate.upgrade(archive)
    assert "ix_checkpoints_deleted_at" in drain_check_plan(archive)


def test_revision_0026_counts_the_same_gpu_hours_on_every_day_of_every_run(archive: Engine) -> None:
    """0026 walks each run's days carrying where the run ends, instead of joining every run at each
    step: `gpu_hours_daily_live` has the same rows as before, for runs of one day and of many, running
    and finished; on PostgreSQL the view is replaced where it is (its schema, its grants)."""
    org = archive_org(archive)
    fake = org.fake
    running = fake.start_job(fake.project_ids()[0])
    later = NIGHTS[1] + timedelta(days=12, hours=7)  # the run just started, seen twelve days on
    assert sync(archive, fake, clock=lambda: NIGHTS[1] + timedelta(hours=1)).exit_code == 0
    assert sync(archive, fake, SyncOptions(full=True), clock=lambda: later).exit_code == 0
    query = "SELECT * FROM gpu_hours_daily_live"
    days = "SELECT COUNT(*) FROM gpu_hours_daily_live WHERE job_id = :j"
    assert int(str(rows(archive, days, j=running)[0][0])) >= 12
    postgresql = archive.dialect.name == "postgresql"
    if postgresql:
        with archive.begin() as connection:
            connection.execute(sa.text("GRANT SELECT ON gpu_hours_daily_live TO PUBLIC"))
    after, before, again = rows_down_and_up(archive, query, "0025")
    assert again == after == before
    assert len({row[5] for row in after}) > 1  # many jobs' runs
    if postgresql:
        grants = "SELECT has_table_privilege('public', 'archiver_internal.gpu_hours_daily_live', 'SELECT')"
        assert scalar(archive, grants) is True


def test_revision_0023_computes_the_same_checkpoint_facts_from_labels_and_modules_worked_out_once(
    archive: Engine,
) -> None:
    """0023 works out each project's label and each LoRA config's modules once per statement: every
    row of `checkpoint_facts_live` is as before, two projects of one name and LoRA checkpoints among them."""
    org = archive_org(archive)
    fake = org.fake
    first, second = fake.project_ids()[:2]
    fake.set_project(second, name=fake.project(first)["name"])  # a label collision: both get their id
    later = NIGHTS[1] + timedelta(days=3)
    assert sync(archive, fake, SyncOptions(full=True), clock=lambda: later).exit_code == 0
    after, before, again = rows_down_and_up(archive, "SELECT * FROM checkpoint_facts_live", "0022")
    assert again == after == before
    labels = rows(
        archive, f"SELECT DISTINCT project_label FROM checkpoint_facts_live WHERE project_id = '{second}'"
    )
    assert labels == [(f"{fake.project(first)['name']} ({second})",)]
    assert rows(archive, "SELECT 1 FROM checkpoint_facts_live WHERE lora_target_modules_text <> '' LIMIT 1")


def query_plan(archive: Engine, statement: str, parameters: dict[str, Any]) -> str:
    """`plan_of` a query in SQLAlchemy's text, on a connection of its own."""
    with archive.connect() as connection:
        return plan_of(connection, statement, parameters)


def test_revision_0029_indexes_the_lora_modules_by_checkpoint_in_one_index(archive: Engine) -> None:
    """0029 replaces the indexes on `checkpoint_id` alone and on `job_id` with one on both: it finds one
    checkpoint's modules, and a job's rows as a sync replaces them; the rows are unchanged."""
    org = archive_org(archive)
    job = org.fake.job_ids(org.fake.project_ids()[0])[0]
    one = "SELECT module FROM checkpoint_lora_modules WHERE job_id = :job AND checkpoint_id = :checkpoint"
    of_job = "SELECT count(*) FROM checkpoint_lora_modules WHERE job_id = :job"
    asked = {"job": job, "checkpoint": "checkpoint-1"}
    composite = "ix_checkpoint_lora_modules_job_id_checkpoint_id"
    assert composite in query_plan(archive, one, asked)
    assert composite in query_plan(archive, of_job, asked)
    indexes = {
        i["name"]: i["column_names"] for i in sa.inspect(archive).get_indexes("checkpoint_lora_modules")
    }
    assert indexes == {
        composite: ["job_id", "checkpoint_id"],
        "ix_checkpoint_lora_modules_module": ["module"],
    }
    assert scalar(archive, "SELECT count(*) FROM checkpoint_lora_modules")

    after, before, again = rows_down_and_up(archive, "SELECT * FROM checkpoint_lora_modules", "0028")
    assert again == after == before
    migrate.downgrade(archive, "0028")
    assert "ix_checkpoint_lora_modules_job_id" in query_plan(archive, of_job, asked)
    assert composite not in query_plan(archive, one, asked)
    migrate.upgrade(archive)
    assert composite in query_plan(archive, one, asked)


def test_an_upgrade_from_nothing_loads_each_revision_file_once(tmp_path: Path) -> None:
    """Revisions that build on earlier ones' SQL load their files, which load theirs: an upgrade from
    nothing loaded 23 files 353 times (0.44 s without cached bytecode). Each is loaded once now."""
    script = f"""
import collections, sys
import alembic.util.pyfiles as pyfiles
from archiver import db, migrate
counts = collections.Counter()
load = pyfiles.load_module_py
def counted(module_id, path):
    counts[str(path)] += 1
    return load(module_id, path)
pyfiles.load_module_py = counted
migrate.upgrade(db.make_engine("sqlite:///{tmp_path / "archive.db"}"))
revisions = {{path: n for path, n in counts.items() if "versions" in path}}
print(len(revisions), max(revisions.values()), migrate.current_revision(db.make_engine("sqlite:///{tmp_path / "archive.db"}")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    files = len(list((REPO / "migrations" / "versions").glob("*.py")))
    assert done.stdout.split() == [str(files), "1", SCHEMA_REVISION]
