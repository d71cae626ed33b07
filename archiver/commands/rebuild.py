"""`archiver rebuild`: a new archive from the API responses an archive kept."""

from __future__ import annotations

import click

from archiver import db, logs
from archiver.commands.shared import logging_options


@click.command()
@logging_options
@click.option(
    "--database-url",
    "target_url",
    required=True,
    help="The empty database to rebuild into (never taken from ARCHIVER_DATABASE_URL, which names the source).",
)
@click.option(
    "--from",
    "source_url",
    envvar="ARCHIVER_DATABASE_URL",
    show_envvar=True,
    default=db.DEFAULT_DATABASE_URL,
    show_default=True,
    help="The archive whose kept API responses are replayed.",
)
def rebuild(target_url: str, source_url: str) -> None:
    """Rebuild an archive by replaying the API responses it kept.

    \b
    Into an empty database. Every run is replayed in order through the same code, with its
    own time, scope and options: the result equals the archive. After a parser fix, the
    rebuilt archive is what the archive would have been: this is how a fix reaches the past.

    \b
    Exit status: 0 rebuilt (runs that ended in an error are replayed to the same end, and
    named in the summary); 1 either database unreachable, or the source's schema out of date;
    2 usage error, or the target is not empty.

    \b
    Examples:
      archiver rebuild --database-url sqlite:///rebuilt.db
      archiver rebuild --from postgresql://archiver@db/archive --database-url postgresql://archiver@db/rebuilt
    """
    from archiver.rebuild import rebuild as replay

    report = replay(source_url, target_url)
    logs.say(report.summary(), event="summary")
