"""Alembic, driven from Python on the archiver's own engine.

Alembic is imported only when a migration runs: the schema-version gate every command
passes through reads `alembic_version` itself and compares it with `SCHEMA_REVISION`, so
a nightly run that finds the schema current never loads Alembic or its revision files.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, docs
from archiver.db import describe_db_error, redact
from archiver.errors import DatabaseUnavailable, SchemaOutOfDate
from archiver.schema import SCHEMA_REVISION

if TYPE_CHECKING:
    from alembic.config import Config


def _script_location() -> str:
    # A source checkout (or editable install) has migrations/ beside the package;
    # a wheel carries the same files as archiver/_migrations.
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if (checkout / "env.py").is_file():
        return str(checkout)
    return str(resources.files("archiver") / "_migrations")


def alembic_config() -> Config:
    """An Alembic config pointing at the archiver's migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", _script_location())
    config.attributes["quiet"] = True
    return config


def known_revisions() -> set[str]:
    """Every revision in the migrations directory."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an unversioned database."""
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailable(
            f"cannot read the schema version of {redact(engine.url)}: {describe_db_error(exc)}"
        ) from None
    if len(versions) > 1:
        raise SchemaOutOfDate(f"the database has several schema heads ({', '.join(sorted(versions))})")
    return versions[0] if versions else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` in one transaction."""
    from alembic import command

    _run(engine, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the schema to `revision` in one transaction."""
    from alembic import command

    _run(engine, lambda config: command.downgrade(config, revision))


def _run(engine: Engine, action: Callable[[Config], object]) -> None:
    config = alembic_config()
    with engine.connect() as connection, db.migration_transaction(connection):
        config.attributes["connection"] = connection
        action(config)
        # Descriptions come from the code, not from revisions: written here for whatever the
        # revisions left, even when there was none to run, so `db upgrade` refreshes them.
        docs.write_comments(connection)


def require_current(engine: Engine) -> None:
    """Refuse to read a database that is not an archive at the newest revision."""
    current = current_revision(engine)
    if current is None:
        raise SchemaOutOfDate(
            f"{redact(engine.url)} holds no archive yet; run `archiver sync` (or `archiver db upgrade`) first"
        )
    head = SCHEMA_REVISION
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at revision {current}, this archiver needs {head}; run `archiver db upgrade`"
        )


def ensure_current(engine: Engine, *, migrate: bool = False) -> None:
    """Create the schema in an empty database; refuse an out-of-date one unless asked to migrate."""
    current = current_revision(engine)
    head = SCHEMA_REVISION
    if current == head:
        return
    if current is None:
        tables = set(sa.inspect(engine).get_table_names())
        if not tables:
            upgrade(engine)
            return
        raise SchemaOutOfDate(
            f"the database {redact(engine.url)} has tables but no archiver schema version "
            f"({', '.join(sorted(tables)[:5])}); point --database-url at an empty or archiver database"
        )
    if current not in known_revisions():
        raise SchemaOutOfDate(
            f"the database is at revision {current}, which this archiver does not know (newer version?); "
            "upgrade the archiver"
        )
    if migrate:
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"the database schema is at revision {current}, this archiver needs {head}; "
        "run `archiver db upgrade` (or pass --migrate)"
    )
