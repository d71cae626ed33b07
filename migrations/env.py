"""Alembic environment: run migrations on the connection `archiver.migrate` hands over,
or, for `alembic ...` from the repository root, on ARCHIVER_DATABASE_URL."""

from __future__ import annotations

import logging.config
import os

from alembic import context
from sqlalchemy.engine import Connection

from archiver import facts
from archiver.db import DEFAULT_DATABASE_URL, make_engine, migration_transaction
from archiver.docs import write_comments
from archiver.schema import metadata

config = context.config


def run(connection: Connection) -> bool:
    """Run the command's migrations; whether any revision was applied."""
    applied: list[object] = []
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite can only ALTER by copying tables
        compare_type=True,
        compare_server_default=True,
        # Comments are written from the code after each migration (archiver.docs), never by a
        # revision: a change of wording must not make autogenerate draft one.
        autogenerate_plugins=["alembic.autogenerate.*", "~alembic.autogenerate.comments"],
        include_name=facts.modelled,
        on_version_apply=lambda **step: applied.append(step),
    )
    with context.begin_transaction():
        context.run_migrations()
    return bool(applied)


def refuse_unguarded_downgrade() -> None:
    """Send `alembic downgrade` to `archiver db downgrade`, which says what a downgrade would delete first."""
    from alembic.util import CommandError

    command = getattr(config.cmd_opts, "cmd", None)
    if command and getattr(command[0], "__name__", "") == "downgrade":
        target = getattr(config.cmd_opts, "revision", "") or "REVISION"
        target = f"-- {target}" if target.startswith("-") else target  # -1 is a step, not an option
        raise CommandError(
            "a downgrade can delete archived data: run `archiver db downgrade "
            f"{target}` instead, which lists what it would delete and asks for --yes"
        )


shared = config.attributes.get("connection")
if shared is not None:
    run(shared)  # archiver.migrate writes the comments
else:
    refuse_unguarded_downgrade()
    if config.config_file_name and not config.attributes.get("quiet"):
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = make_engine(os.environ.get("ARCHIVER_DATABASE_URL") or DEFAULT_DATABASE_URL)
    with engine.connect() as connection, migration_transaction(connection):
        if run(connection):  # `alembic upgrade` or `downgrade` from the repository root
            write_comments(connection)
            facts.refresh(connection)
    engine.dispose()
