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
@click.option(
    "--skip-corrupt",
    is_flag=True,
    help="Replay past kept responses whose body no longer matches its sha256, leaving them out (named in "
    "the summary); without it such a body stops the rebuild.",
)
def rebuild(target_url: str, source_url: str, skip_corrupt: bool) -> None:
    """Rebuild an archive by replaying the API responses it kept.

    \b
    Into an empty database. Every run is replayed in order through the same code, with its
    own time, scope and options: the result equals the archive. After a parser fix, the
    rebuilt archive is what the archive would have been: this is how a fix reaches the past.

    \b
    Every kept body is checked against the sha256 it was kept under: a corrupt one stops the
    rebuild, naming run and request (exit 1), unless --skip-corrupt leaves it out.

    \b
    Exit status: 0 rebuilt (runs that ended in an error are replayed to the same end, and
    named in the summary); 1 either database unreachable, the source's schema out of date, or a
    kept response corrupt; 2 usage error, or the target is not empty.

    \b
    Examples:
      archiver rebuild --database-url sqlite:///rebuilt.db
      archiver rebuild --from postgresql://archiver@db/archive --database-url postgresql://archiver@db/rebuilt
    """
    from archiver.rebuild import rebuild as replay

    report = replay(source_url, target_url, skip_corrupt=skip_corrupt)
    logs.say(report.summary(), event="summary")
