"""A new SQLite archive's schema in one step: the statements its revisions leave, run again.

A first sync made its archive's schema by running every Alembic revision, 0001 to the newest: 0.27 s
on an empty SQLite database with Alembic's import, some 8% of a first load of 46,238 checkpoints on
2 cores. What the revisions leave on an empty SQLite database is the same every time, and
`migrations/sqlite-head.sql` holds it as `sqlite3` dumps a database (`Connection.iterdump`): its
tables, indexes and views, and the `alembic_version` row. A new SQLite archive is made by running those
statements in one transaction, then refreshing the (empty) facts tables as a migration does: 0.03 s.

The revisions stay the only source of the schema, as a lock file leaves the requirements theirs:
`python -m archiver.snapshot` writes the file from them, it names the revision it was written at (an
archiver at another revision runs the revisions instead), and a test holds an archive made from it
against one the revisions make, table by table. PostgreSQL archives are always made by the revisions,
and `archiver db upgrade` always runs them.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import Engine

from archiver import db, facts
from archiver.schema import SCHEMA_REVISION

log = logging.getLogger("archiver.migrate")

FILENAME = "sqlite-head.sql"  # in the migrations directory, which a wheel carries as archiver._migrations
_FIRST_LINE = "-- The archive's schema on SQLite at revision "


def create(engine: Engine, location: str | Path) -> bool:
    """Make the schema of an empty SQLite database from the snapshot in the migrations directory
    `location`; False, having done nothing, where it cannot: another database, or no snapshot of the
    newest revision. Raise what the database raises (nothing of the schema is then left)."""
    if engine.dialect.name != "sqlite":
        return False
    try:
        text = (Path(location) / FILENAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    revision = revision_of(text)
    if revision != SCHEMA_REVISION:
        log.debug(
            "the schema snapshot is of revision %s, not %s: running the revisions", revision, SCHEMA_REVISION
        )
        return False
    with engine.connect() as connection, db.migration_transaction(connection):
        for statement in statements(text):
            connection.exec_driver_sql(statement)
        facts.refresh(connection)  # as after a migration (`migrate.upgrade`): facts_inputs' rows
    return True


def revision_of(text: str) -> str | None:
    """The revision a snapshot's text is of (its first line names it), or None for another text."""
    first = text.partition("\n")[0]
    return first.removeprefix(_FIRST_LINE).strip() if first.startswith(_FIRST_LINE) else None


def statements(text: str) -> Iterator[str]:
    """The SQL statements of a snapshot, one at a time (a statement spans lines; `--` lines are comments)."""
    pending: list[str] = []
    for line in text.splitlines(keepends=True):
        if not pending and (line.startswith("--") or not line.strip()):
            continue
        pending.append(line)
        statement = "".join(pending)
        if sqlite3.complete_statement(statement):
            yield statement.strip()
            pending = []
    if pending:
        raise ValueError(f"the schema snapshot ends inside a statement: {''.join(pending)[:80]!r}")


def dump() -> str:
    """What the revisions leave on an empty SQLite database, as a snapshot's text."""
    from alembic import command

    from archiver import migrate

    with tempfile.TemporaryDirectory(prefix="archiver-snapshot-") as directory:
        engine = db.make_engine(f"sqlite:///{Path(directory) / 'archive.db'}")
        try:
            config = migrate.alembic_config()
            with engine.connect() as connection, db.migration_transaction(connection):
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            with engine.connect() as connection:
                driver = connection.connection.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                lines = [line for line in driver.iterdump() if line not in ("BEGIN TRANSACTION;", "COMMIT;")]
                assert driver.execute("SELECT version_num FROM alembic_version").fetchall() == [
                    (SCHEMA_REVISION,)
                ]
        finally:
            engine.dispose()
    head = (
        f"{_FIRST_LINE}{SCHEMA_REVISION}\n"
        "-- Written by `python -m archiver.snapshot` from the revisions, as they leave an empty database:\n"
        "-- do not edit; write it again after adding a revision (archiver/snapshot.py says why it is here).\n"
    )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    """Write the snapshot of the newest revision into the checkout's migrations directory."""
    from archiver import migrate

    target = Path(migrate.script_location()) / FILENAME
    target.write_text(dump(), encoding="utf-8")
    sys.stdout.write(f"wrote {target} (revision {SCHEMA_REVISION})\n")


if __name__ == "__main__":
    main()
