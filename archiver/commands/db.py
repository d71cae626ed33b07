"""`archiver db ...`: the archive's schema, backups and readers."""

from __future__ import annotations

from pathlib import Path

import click

from archiver import access, backup, db, migrate
from archiver.commands.shared import database_option, with_typed_options
from archiver.errors import NeedsConfirmation
from archiver.schema import SCHEMA_REVISION


@click.group(name="db")
def db_group() -> None:
    """Manage the archive's schema (Alembic migrations).

    \b
    Exit status: each subcommand's help lists its own; 2 usage error.
    """


@db_group.command()
@click.argument("revision", default="head")
@database_option
def upgrade(revision: str, database_url: str) -> None:
    """Upgrade the schema to REVISION (default: the newest).

    \b
    Exit status: 0 at REVISION; 1 database unreachable, or its schema newer than this
    archiver; 2 usage error (an unknown REVISION).
    """
    engine = db.make_engine(database_url)
    db.check_connection(engine)
    migrate.upgrade(engine, revision)
    click.echo(f"{db.redact(engine.url)} is at revision {migrate.current_revision(engine)}")


@db_group.command()
@click.argument("revision")
@database_option
@click.option(
    "--yes", is_flag=True, help="Go ahead even though the downgrade deletes data (back it up first)."
)
def downgrade(revision: str, database_url: str, yes: bool) -> None:
    """Step the schema back to REVISION.

    \b
    'base' removes every archive table. A downgrade that would delete data (tables with
    rows, columns with values: history, the run ledger) says what, and how to back up
    first, and changes nothing unless given --yes.

    \b
    Exit status: 0 at REVISION; 1 no archive or database unreachable; 2 usage error (an
    unknown REVISION), or the downgrade would delete data and --yes was not given.
    """
    engine = db.make_engine(db.require_existing(database_url))
    db.check_connection(engine)
    if not yes and (losses := migrate.downgrade_losses(engine, revision)):
        raise NeedsConfirmation(
            f"downgrading to {revision} would delete {'; '.join(map(str, losses))}. Nothing was changed: "
            f"{backup.how_to_back_up(engine.url)}, then run `archiver db downgrade {revision} --yes`"
        )
    migrate.downgrade(engine, revision)
    click.echo(f"{db.redact(engine.url)} is at revision {migrate.current_revision(engine) or 'base'}")


@db_group.command(name="grant-read")
@click.argument("role")
@database_option
def grant_read(role: str, database_url: str) -> None:
    """Let a PostgreSQL role read the archive, now and after upgrades.

    \b
    Grants ROLE USAGE on the archive's schema and its bookkeeping's (archiver_internal)
    and SELECT on every table and view in them, and default
    privileges FOR ROLE the archive's owner, so that tables and views later migrations
    create are readable too. Run it as the archive's owner or a superuser.

    \b
    Exit status: 0 granted; 1 no archive, database unreachable, or not allowed to grant;
    2 usage error (a SQLite archive, an unknown ROLE).

    \b
    Example:
      psql -c "CREATE ROLE archiver_reader LOGIN PASSWORD '...'"
      archiver db grant-read archiver_reader
    """
    engine = db.make_engine(db.require_existing(database_url))
    db.check_connection(engine)
    schemas, owners = access.grant_read(engine, role)
    click.echo(
        f"{role} may read every table and view in schema {' and '.join(schemas)} of {db.redact(engine.url)}, and those "
        f"that {' and '.join(owners)} create in later migrations"
    )


@db_group.command(name="backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@database_option
def backup_command(path: Path, database_url: str) -> None:
    """Copy a SQLite archive to PATH, consistently, while it is in use.

    \b
    The copy is a new file only you can read (0600); readers and even a running sync go on
    meanwhile. For PostgreSQL, use pg_dump (the message says how).

    \b
    Exit status: 0 backed up; 1 the copy failed (nothing left at PATH); 2 usage error (not a
    SQLite archive, no archive there, PATH exists or cannot be created).
    """
    size = backup.backup_sqlite(database_url, path)
    click.echo(f"backed up {db.redact(database_url)} to {path} ({size} bytes)")


@db_group.command()
@database_option
def current(database_url: str) -> None:
    """Show which schema revision the archive is at.

    \b
    It reads the archive only: a missing SQLite file is an error, never a new archive.

    \b
    Exit status: 0 revision shown; 1 no archive or database unreachable; 2 usage error.
    """
    engine = db.open_existing(database_url)
    at = migrate.current_revision(engine)
    head = SCHEMA_REVISION
    if at is not None and at != head and at not in migrate.known_revisions():
        click.echo(f"{at} (head {head}): {migrate.unknown_revision(at)}")
        return
    state = "up to date" if at == head else "out of date: run `archiver db upgrade`"
    click.echo(with_typed_options(f"{at or 'base (empty)'} (head {head}, {state})"))
