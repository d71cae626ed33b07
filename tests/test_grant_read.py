"""`archiver db grant-read ROLE`: a reader role reads every table and view, and still does after upgrades."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, migrate
from archiver.schema import metadata
from archiver.views import READ_ONLY

from .support import fakes
from .support.commands import run_archiver
from .support.databases import scalar
from .support.waiting import wait_for

RELATIONS = sorted([*metadata.tables, *(view.name for view in READ_ONLY)])


@dataclass
class Roles:
    """A writer that owns the archive (as `archiver sync` connects), a reader, and an admin."""

    admin_url: str
    writer_url: str
    writer: str
    reader: str


@pytest.fixture
def roles(postgres_url: str) -> Iterator[Roles]:
    """Throwaway roles on the test server (roles are server-wide), dropped with what they own afterwards."""
    suffix = secrets.token_hex(4)
    writer, reader = f"archiver_writer_{suffix}", f"archiver_reader_{suffix}"
    admin = db.make_engine(postgres_url)
    database = sa.make_url(postgres_url).database
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {writer} LOGIN")
        connection.exec_driver_sql(f"CREATE ROLE {reader} NOLOGIN")
        # The database's owner may create in its public schema, as an archive's own role would.
        connection.exec_driver_sql(f'ALTER DATABASE "{database}" OWNER TO {writer}')
    writer_url = sa.make_url(postgres_url).set(username=writer).render_as_string(hide_password=False)
    try:
        yield Roles(postgres_url, writer_url, writer, reader)
    finally:
        # A closed session's temporary tables (the COPY stage) go a moment after it: wait for them.
        wait_for(
            lambda: (
                scalar(admin, "SELECT COUNT(*) FROM pg_stat_activity WHERE usename = :role", role=writer) == 0
            ),
            "the writer's sessions to end",
        )
        with admin.begin() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" OWNER TO CURRENT_USER')
            # One at a time: both in one statement trips over the default ACL they share.
            connection.exec_driver_sql(f"DROP OWNED BY {reader}")
            connection.exec_driver_sql(f"DROP OWNED BY {writer}")
            connection.exec_driver_sql(f"DROP ROLE {writer}")
            connection.exec_driver_sql(f"DROP ROLE {reader}")
        admin.dispose()


def unreadable(admin: Engine, role: str) -> list[str]:
    """The tables and views `role` cannot SELECT from."""
    refused = []
    with admin.connect() as connection:
        for name in RELATIONS:
            with connection.begin():
                connection.exec_driver_sql(f"SET LOCAL ROLE {role}")
                try:
                    with connection.begin_nested():
                        connection.execute(
                            sa.select(sa.literal_column("1")).select_from(sa.table(name)).limit(1)
                        )
                except sa.exc.ProgrammingError:
                    refused.append(name)
    return refused


def test_a_reader_reads_everything_now_and_after_a_downgrade_and_upgrade(roles: Roles) -> None:
    writer = db.make_engine(roles.writer_url)
    admin = db.make_engine(roles.admin_url)
    try:
        assert (
            fakes.sync(writer, fakes.small_org(2)).exit_code == 0
        )  # creates the archive, owned by the writer
        assert unreadable(admin, roles.reader) == RELATIONS

        # Run by an administrator, not the owner: the docs' old recipe then covered only the
        # administrator's future objects, and views a later migration recreated were unreadable.
        result = run_archiver("db", "grant-read", roles.reader, "--database-url", roles.admin_url)
        assert result.exit_code == 0, result.output
        assert f"that {roles.writer} create" in result.stdout
        assert unreadable(admin, roles.reader) == []

        # Back past the views (0003) and the history tables (0004), and up again: all of them are
        # created anew, by the writer.
        migrate.downgrade(writer, "0002")
        migrate.upgrade(writer)
        assert unreadable(admin, roles.reader) == []

        with admin.connect() as connection, connection.begin():
            connection.exec_driver_sql(f"SET LOCAL ROLE {roles.reader}")
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                connection.exec_driver_sql("DELETE FROM sync_runs")
    finally:
        writer.dispose()
        admin.dispose()


def test_a_missing_role_is_named(postgres_url: str) -> None:
    migrate.upgrade(engine := db.make_engine(postgres_url))
    engine.dispose()
    result = run_archiver("db", "grant-read", "no_such_role_7c1d", "--database-url", postgres_url)
    assert result.exit_code == 2 and "there is no role no_such_role_7c1d: create it first" in result.stderr


def test_sqlite_has_no_roles_and_says_what_to_do_instead(tmp_path: object) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/archive.db")
    migrate.upgrade(engine)
    engine.dispose()
    result = run_archiver("db", "grant-read", "reader", "--database-url", f"sqlite:///{tmp_path}/archive.db")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "SQLite has no roles" in result.stderr


def test_a_reader_sees_times_in_utc_whatever_the_server_says(roles: Roles) -> None:
    """A reader's session time zone decided how every time displayed: a BI tool in Berlin showed them off by hours."""
    writer = db.make_engine(roles.writer_url)
    admin = db.make_engine(roles.admin_url)
    try:
        assert fakes.sync(writer, fakes.small_org(1)).exit_code == 0
        with admin.begin() as connection:
            connection.exec_driver_sql(f"ALTER ROLE {roles.reader} LOGIN")
            connection.exec_driver_sql(f"ALTER ROLE {roles.reader} SET timezone = 'Europe/Berlin'")
        result = run_archiver("db", "grant-read", roles.reader, "--database-url", roles.admin_url)
        assert result.exit_code == 0, result.output
        reader_url = sa.make_url(roles.admin_url).set(username=roles.reader)
        reader = db.make_engine(reader_url.render_as_string(hide_password=False))
        try:
            with reader.connect() as connection:
                assert connection.exec_driver_sql("SHOW timezone").scalar() == "UTC"
                shown = connection.exec_driver_sql("SELECT CAST(started_at AS TEXT) FROM sync_runs").scalar()
            assert str(shown).endswith("+00"), shown
        finally:
            reader.dispose()
    finally:
        writer.dispose()
        admin.dispose()


def bookkeeping(name: str) -> bool:
    """Kept responses, history, every version, the `_live` views, the facts' bookkeeping: not what an analyst charts."""
    return name in ("api_responses", "api_response_bodies", "facts_inputs") or (
        name.endswith(("_history", "_versions", "_live")) and name != "training_job_status_history"
    )


def test_a_readers_table_list_is_what_it_charts_and_a_reader_granted_before_0017_still_reads_the_rest(
    roles: Roles,
) -> None:
    """The bookkeeping crowded every BI tool's table picker; on PostgreSQL it now lives in archiver_internal."""
    writer = db.make_engine(roles.writer_url)
    admin = db.make_engine(roles.admin_url)
    try:
        assert fakes.sync(writer, fakes.small_org(2)).exit_code == 0
        migrate.downgrade(writer, "0016")  # an archive a reader was granted before the move
        result = run_archiver("db", "grant-read", roles.reader, "--database-url", roles.admin_url)
        assert result.exit_code == 0, result.output
        assert "in schema public of" in result.stdout
        migrate.upgrade(writer)
        assert unreadable(admin, roles.reader) == []

        # A BI tool connects as the reader, with PostgreSQL's default search path.
        with admin.begin() as connection:
            connection.exec_driver_sql(f"ALTER ROLE {roles.reader} LOGIN")
        plain = sa.create_engine(
            sa.make_url(roles.admin_url).set(drivername="postgresql+psycopg", username=roles.reader)
        )
        try:
            inspector = sa.inspect(plain)
            listed = {*inspector.get_table_names(), *inspector.get_view_names()}
            internal = {
                *inspector.get_table_names("archiver_internal"),
                *inspector.get_view_names("archiver_internal"),
            }
            with plain.connect() as connection:  # still readable by its schema's name
                assert connection.exec_driver_sql(
                    "SELECT COUNT(*) FROM archiver_internal.checkpoint_versions"
                ).scalar()
        finally:
            plain.dispose()
        assert listed == {name for name in RELATIONS if not bookkeeping(name)} | {"alembic_version"}
        assert internal == {name for name in RELATIONS if bookkeeping(name)}

        # Tables a later migration makes in archiver_internal are readable too (default privileges).
        with writer.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE archiver_internal.made_later (x integer)")
        with admin.connect() as connection, connection.begin():
            connection.exec_driver_sql(f"SET LOCAL ROLE {roles.reader}")
            assert (
                connection.exec_driver_sql("SELECT COUNT(*) FROM archiver_internal.made_later").scalar() == 0
            )
        with writer.begin() as connection:
            connection.exec_driver_sql("DROP TABLE archiver_internal.made_later")

        # Granted again now: the command names both schemas.
        result = run_archiver("db", "grant-read", roles.reader, "--database-url", roles.admin_url)
        assert "in schema public and archiver_internal of" in result.stdout
    finally:
        writer.dispose()
        admin.dispose()
