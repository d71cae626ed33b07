"""Alembic, driven from Python on the archiver's own engine."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from archiver.db import describe_db_error, redact
from archiver.errors import DatabaseUnavailable, SchemaOutOfDate


def _script_location() -> str:
    # A source checkout (or editable install) has migrations/ beside the package;
    # a wheel carries the same files as archiver/_migrations.
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if (checkout / "env.py").is_file():
        return str(checkout)
    return str(resources.files("archiver") / "_migrations")


def alembic_config() -> Config:
    """An Alembic config pointing at the archiver's migrations."""
    config = Config()
    config.set_main_option("script_location", _script_location())
    config.attributes["quiet"] = True
    return config


def head_revision() -> str:
    """The newest revision this archiver knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an unversioned database."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailable(
            f"cannot read the schema version of {redact(engine.url)}: {describe_db_error(exc)}"
        ) from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` in one transaction."""
    _run(engine, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the schema to `revision` in one transaction."""
    _run(engine, lambda config: command.downgrade(config, revision))


def _run(engine: Engine, action: object) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        action(config)  # type: ignore[operator]


def require_current(engine: Engine) -> None:
    """Refuse to read a database that is not an archive at the newest revision."""
    current = current_revision(engine)
    if current is None:
        raise SchemaOutOfDate(
            f"{redact(engine.url)} holds no archive yet; run `archiver sync` (or `archiver db upgrade`) first"
        )
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at revision {current}, this archiver needs {head}; run `archiver db upgrade`"
        )


def ensure_current(engine: Engine, *, migrate: bool = False) -> None:
    """Create the schema in an empty database; refuse an out-of-date one unless asked to migrate."""
    current = current_revision(engine)
    head = head_revision()
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
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
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
