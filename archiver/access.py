"""Read access to a PostgreSQL archive for BI tools and analysts: `archiver db grant-read ROLE`.

Granting SELECT on today's tables is not enough: a later migration recreates views (and adds
tables), and the new objects are owned by the role that ran it. So the role also gets default
privileges FOR ROLE each owner of the archive, which PostgreSQL applies to whatever that owner
creates from then on.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from archiver import db
from archiver.errors import DatabaseUnavailable, UsageError
from archiver.schema import INTERNAL_SCHEMA, metadata
from archiver.views import READ_ONLY

SQLITE_READERS = (
    "SQLite has no roles: give the reader read permission on the archive file and write permission on its "
    "directory (for the -wal and -shm files); docs/schema.md says more"
)


log = logging.getLogger("archiver.access")


def grant_read(engine: Engine, role: str) -> tuple[list[str], list[str]]:
    """Let `role` read every table and view of the archive, now and after later migrations.

    Return the schemas (the archive's, and its bookkeeping's since revision 0017) and the owners
    whose future objects `role` may read.
    """
    if engine.dialect.name != "postgresql":
        raise UsageError(SQLITE_READERS)
    try:
        with engine.begin() as connection:
            return _grant(connection, role)
    except sa.exc.ProgrammingError as exc:  # insufficient privilege, mostly
        raise DatabaseUnavailable(
            f"granting read access failed: {db.describe_db_error(exc)}; run it as the role that owns the "
            "archive (the one `archiver sync` and `archiver db upgrade` connect as) or as a superuser"
        ) from None


def _grant(connection: Connection, role: str) -> tuple[list[str], list[str]]:
    if (
        connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
        is None
    ):
        raise UsageError(
            f"there is no role {role}: create it first (CREATE ROLE {role} LOGIN PASSWORD '...')"
        )
    database, schema, user = connection.execute(
        sa.text("SELECT current_database(), current_schema(), current_user")
    ).one()
    schemas = [schema, *_internal(connection)]
    owners = _owners(connection, schemas) or [user]
    quote = connection.dialect.identifier_preparer.quote
    reader = quote(role)
    connection.exec_driver_sql(f"GRANT CONNECT ON DATABASE {quote(database)} TO {reader}")
    for where in map(quote, schemas):
        statements = [
            f"GRANT USAGE ON SCHEMA {where} TO {reader}",
            # ALL TABLES includes views.
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {where} TO {reader}",
            *(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote(owner)} IN SCHEMA {where} GRANT SELECT ON TABLES TO {reader}"
                for owner in owners
            ),
        ]
        for statement in statements:
            connection.exec_driver_sql(statement)
    _read_in_utc(connection, reader, quote(database))
    return schemas, owners


def _read_in_utc(connection: Connection, reader: str, database: str) -> None:
    """Make the reader's sessions in this database show times in UTC, as the archive means them.

    A session's time zone decides how `timestamptz` displays: a BI tool's server in Berlin showed
    every time an hour or two off. Setting it needs the right to alter the role; without it the
    grants stand and the command says what to ask an administrator to run.
    """
    statement = f"ALTER ROLE {reader} IN DATABASE {database} SET timezone = 'UTC'"
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(statement)
    except sa.exc.ProgrammingError:
        log.warning(
            "could not set the reader's time zone to UTC (no right to alter roles); an administrator can: %s",
            statement,
        )


def _internal(connection: Connection) -> list[str]:
    """The bookkeeping's schema (revision 0017), where the archive has one."""
    found = connection.execute(
        sa.text("SELECT nspname FROM pg_namespace WHERE nspname = :name"), {"name": INTERNAL_SCHEMA}
    )
    return list(found.scalars())


def _owners(connection: Connection, schemas: list[str]) -> list[str]:
    """The roles that own the archive's tables and views: later migrations run as them."""
    names = [*metadata.tables, *(view.name for view in READ_ONLY), "alembic_version"]
    found = connection.execute(
        sa.text(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY(:schemas) AND c.relname = ANY(:names) ORDER BY 1"
        ),
        {"schemas": schemas, "names": names},
    )
    return list(found.scalars())
