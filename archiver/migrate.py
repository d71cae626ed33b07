"""Alembic, driven from Python on the archiver's own engine.

Alembic is imported only when a migration runs: the schema-version gate every command
passes through reads `alembic_version` itself and compares it with `SCHEMA_REVISION`, so
a nightly run that finds the schema current never loads Alembic or its revision files.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, docs, facts, snapshot
from archiver.db import describe_db_error, redact
from archiver.errors import DatabaseUnavailable, SchemaOutOfDate, SchemaTooNew, UsageError
from archiver.schema import SCHEMA_REVISION, facts_inputs

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")
_STEPS = re.compile(r"[+-][0-9]{1,4}")  # Alembic's relative revisions: -1 is one step down


def script_location() -> str:
    """Where the revisions are: migrations/ beside the package, or inside it, as a wheel installs them."""
    # A source checkout (or editable install) has migrations/ beside the package;
    # a wheel carries the same files as archiver/_migrations.
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if (checkout / "env.py").is_file():
        return str(checkout)
    return str(resources.files("archiver") / "_migrations")


def alembic_config() -> Config:
    """An Alembic config pointing at the archiver's migrations."""
    from alembic.config import Config

    _load_revisions_once()
    config = Config()
    config.set_main_option("script_location", script_location())
    config.attributes["quiet"] = True
    return config


def _load_revisions_once() -> None:
    """Make Alembic load each revision file once per process, however many revisions build on it.

    A revision that builds on an earlier one's SQL loads that revision's file (`load_python_file`),
    which loads those it builds on, and so on: an upgrade from nothing loaded the 23 revision files
    353 times, 0.44 s where no bytecode is cached, a good part of a first sync. Their modules hold SQL
    text and functions of it, never changed once loaded, so one load serves every revision and
    Alembic. Only files in `versions/`: `env.py` runs its migrations as it loads, and must each time.
    """
    import alembic.util

    load = alembic.util.load_python_file
    if getattr(load, "loads_revisions_once", False):
        return
    versions = (Path(script_location()) / "versions").resolve()
    loaded: dict[Path, ModuleType] = {}
    lock = threading.RLock()  # a revision's file loads the files it builds on while it loads

    @functools.wraps(load)
    def load_python_file(dir_: str | os.PathLike[str], filename: str | os.PathLike[str]) -> ModuleType:
        path = (Path(dir_) / filename).resolve()
        if path.parent != versions:
            return load(dir_, filename)
        with lock:
            if path not in loaded:
                loaded[path] = load(dir_, filename)
            return loaded[path]

    load_python_file.loads_revisions_once = True  # type: ignore[attr-defined]
    alembic.util.load_python_file = load_python_file


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


def unknown_revision(current: str) -> SchemaOutOfDate:
    """The error for a database at a revision not in this archiver's migrations."""
    newer = current.isdigit() and SCHEMA_REVISION.isdigit() and int(current) > int(SCHEMA_REVISION)
    if newer:
        return SchemaTooNew(
            f"the archive is at schema revision {current}, newer than this archiver (knows up to "
            f"{SCHEMA_REVISION}): upgrade the archiver"
        )
    return SchemaOutOfDate(
        f"the archive is at schema revision {current!r}, which no archiver migration made (this one knows "
        f"0001 to {SCHEMA_REVISION}): check --database-url / ARCHIVER_DATABASE_URL"
    )


def require_known(engine: Engine) -> str | None:
    """The database's revision; refuse one this archiver does not know (a newer archiver migrated it)."""
    current = current_revision(engine)
    if current is not None and current != SCHEMA_REVISION and current not in known_revisions():
        raise unknown_revision(current)
    return current


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` in one transaction."""
    from alembic import command

    target = checked_target(revision)
    _run(engine, lambda config: command.upgrade(config, target), then=_refresh_if_moved(engine))


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the schema to `revision` in one transaction."""
    from alembic import command

    target = checked_target(revision)
    _run(engine, lambda config: command.downgrade(config, target), then=_refresh_if_moved(engine))


def _refresh_if_moved(engine: Engine) -> Callable[[sa.Connection], None]:
    """After a migration, rewrite the facts tables if a revision ran: it may have changed their views.

    A `db upgrade` with nothing to run leaves them alone (on a large archive a rewrite takes a minute).
    """
    from alembic.runtime.migration import MigrationContext

    before = current_revision(engine)

    def refresh(connection: sa.Connection) -> None:
        if MigrationContext.configure(connection).get_current_revision() != before:
            facts.refresh(connection)

    return refresh


def checked_target(revision: str) -> str:
    """Refuse a target that is not a revision of this archiver, head, base or a step such as -1.

    Alembic's richer syntax (`heads`, `x@y`, ranges) means nothing for one linear history, and some
    of its spellings (`@`, an empty string, `head+5`) fail inside Alembic rather than with a message.
    """
    if revision in ("head", "base") or _STEPS.fullmatch(revision) or revision in known_revisions():
        return revision
    raise UsageError(
        f"there is no schema revision {revision!r}: give one of "
        f"{', '.join(sorted(known_revisions()))}, head or base"
    )


def _run(
    engine: Engine,
    action: Callable[[Config], object],
    *,
    commit: bool = True,
    then: Callable[[sa.Connection], T] | None = None,
) -> T | None:
    """Run an Alembic command on one transaction; `then` reads the result before it commits (or not)."""
    from alembic.util import CommandError

    require_known(engine)  # Alembic cannot step from a revision it has no file for
    config = alembic_config()
    with engine.connect() as connection, db.migration_transaction(connection, commit=commit):
        config.attributes["connection"] = connection
        try:
            action(config)
        except CommandError as exc:  # a step past either end of the history, mostly
            raise UsageError(
                f"{exc}; the revisions are {', '.join(sorted(known_revisions()))}, head and base"
            ) from None
        # Descriptions come from the code, not from revisions: written here for whatever the
        # revisions left, even when there was none to run, so `db upgrade` refreshes them.
        docs.write_comments(connection)
        return None if then is None else then(connection)


@dataclass(frozen=True)
class Loss:
    """Data a downgrade would delete: a table's rows, or the values a column holds."""

    table: str
    column: str | None  # None: the whole table
    count: int

    def __str__(self) -> str:
        if self.column is None:
            return f"table {self.table} ({self.count} rows)"
        return f"column {self.table}.{self.column} ({self.count} values)"


def downgrade_losses(engine: Engine, revision: str) -> list[Loss]:
    """What downgrading to `revision` would delete: the downgrade is run in a transaction that is
    rolled back, and every table or column it dropped that holds data is counted."""
    from alembic import command

    target = checked_target(revision)
    before = _tables(engine)
    after = _run(engine, lambda config: command.downgrade(config, target), commit=False, then=_tables)
    assert after is not None
    losses = []
    with engine.connect() as connection:
        for name, columns in sorted(before.items()):
            table = sa.table(name)
            if name not in after:
                rows = sa.select(sa.func.count()).select_from(table)
                losses.append(Loss(name, None, connection.execute(rows).scalar_one()))
                continue
            for column in sorted(columns - after[name]):
                values = sa.select(sa.func.count(sa.column(column))).select_from(table)
                losses.append(Loss(name, column, connection.execute(values).scalar_one()))
    return [loss for loss in losses if loss.count]


def _tables(bind: Engine | sa.Connection) -> dict[str, set[str]]:
    """The archive's tables and their columns: not the views, nor the facts tables computed from them
    (no data is lost with them), nor alembic_version and facts_inputs, which are bookkeeping."""
    inspector = sa.inspect(bind)  # on PostgreSQL, the bookkeeping's schema too: it is on the search path
    return {
        table: {column["name"] for column in inspector.get_columns(table)}
        for table in inspector.get_table_names()
        if table not in ("alembic_version", facts_inputs.name) and table not in facts.NAMES
    }


def require_current(engine: Engine) -> None:
    """Refuse to read a database that is not an archive at the newest revision."""
    current = require_known(engine)
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
    current = require_known(engine)
    head = SCHEMA_REVISION
    if current == head:
        return
    if current is None:
        tables = set(sa.inspect(engine).get_table_names())
        if not tables:
            # A new SQLite archive from the snapshot of what the revisions leave (`archiver.snapshot`).
            if not snapshot.create(engine, script_location()):
                upgrade(engine)
            return
        raise SchemaOutOfDate(
            f"the database {redact(engine.url)} has tables but no archiver schema version "
            f"({', '.join(sorted(tables)[:5])}); point --database-url at an empty or archiver database"
        )
    if migrate:
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"the database schema is at revision {current}, this archiver needs {head}; "
        "run `archiver db upgrade` (or pass --migrate)"
    )
