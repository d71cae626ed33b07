"""`archiver demo`: archive a fake organisation, no API key needed."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from archiver import db, logs, outcome
from archiver.commands.shared import logging_options
from archiver.output import render

if TYPE_CHECKING:
    from archiver.demo import Demo


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
    """Archive a fake organisation over three nights: no API key needed.

    \b
    Serves a generated organisation from the built-in fake API on loopback and archives it with
    the real sync, three times: as generated, then after each of two nights in which jobs finish,
    checkpoints are saved and cleaned up, a project is renamed and another deleted. Then it prints
    storage by project as of the first night's run (the deleted project still there, the renamed
    one under its old name), and the archive's live storage after each night.

    \b
    Exit status: 0 everything archived; 1 fatal (the database unreachable); 2 usage error;
    3 some jobs failed (as for `archiver sync`).
    """
    from archiver.demo import run_demo

    demo = run_demo(database_url, seed)
    first = demo.nights[0].finished_at.isoformat()
    if logs.json_output():
        for night in demo.nights:
            if night.changes is not None:
                logs.say(str(night.changes), event="night", night=night.number)
            report = night.report
            fields = outcome.of_report(report, report.seconds).fields()
            logs.say(report.summary(), event="summary", night=night.number, **fields)
        logs.say(f"Storage by project as of night 0's run ({first})", event="as_of", as_of=first)
        click.echo(render(*demo.as_of, "jsonl"), nl=False)
        logs.say("Live storage after each night", event="over_time")
        click.echo(render(*demo.over_time, "jsonl"), nl=False)
    else:
        for night in demo.nights:
            click.echo(f"{night.changes}.\n  " if night.changes else "Night 0: as generated.\n  ", nl=False)
            click.echo(night.report.summary())
        click.echo(f"\nArchive: {db.redact(database_url)}. Storage by project as of night 0's run")
        click.echo(f"(archiver query --as-of {first}):\n")
        click.echo(render(*demo.as_of), nl=False)
        if since := _since(demo):
            click.echo(f"\nSince then {since}: the API has forgotten, the archive has not.")
        click.echo("\nLive storage after each night (each as of its run's end):\n")
        click.echo(render(*demo.over_time), nl=False)
    sys.exit(demo.exit_code)


def _since(demo: Demo) -> str:
    """What the nights did to projects, said in a few words."""
    said = []
    for night in demo.nights:
        if night.changes and night.changes.renamed:
            project_id, _, new = night.changes.renamed
            said.append(f"project {project_id} was renamed {new}")
        if night.changes and night.changes.deleted:
            said.append(f"project {night.changes.deleted[0]} was deleted")
    return " and ".join(said)
