"""`archiver demo`: archive a fake organisation, no API key needed."""

from __future__ import annotations

import sys

import click

from archiver import db, logs, outcome
from archiver.commands.shared import logging_options
from archiver.output import render


@click.command()
@logging_options
@click.option(
    "--database-url",
    # Deliberately not ARCHIVER_DATABASE_URL: that names the real archive, which the demo's fake
    # organisation must never reach.
    default="sqlite:///archiver-demo.db",
    show_default=True,
    help="Where to write the demo archive (never taken from ARCHIVER_DATABASE_URL).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Which fake organisation to generate.")
def demo(database_url: str, seed: int) -> None:
    """Archive a fake organisation: no API key needed.

    \b
    Serves a generated organisation from the built-in fake API on loopback, archives it with
    the real sync, and prints storage by project.

    \b
    Exit status: 0 everything archived; 1 fatal (the database unreachable); 2 usage error;
    3 some jobs failed (as for `archiver sync`).
    """
    from archiver.demo import run_demo

    report, columns, rows = run_demo(database_url, seed)
    if logs.json_output():
        logs.say(report.summary(), event="summary", **outcome.of_report(report, report.seconds).fields())
        click.echo(render(columns, rows, "jsonl"), nl=False)
    else:
        click.echo(report.summary())
        click.echo(f"\nArchive: {db.redact(database_url)}. Storage by project:\n")
        click.echo(render(columns, rows), nl=False)
    sys.exit(report.exit_code)
