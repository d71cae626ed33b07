"""`archiver check` and `archiver runs`: how the archive's sync runs are going."""

from __future__ import annotations

import sys
from datetime import timedelta

import click

from archiver import health, query, reports
from archiver.commands.shared import database_option, duration_option, format_option, with_typed_options
from archiver.output import print_rows


@click.command()
@database_option
@click.option(
    "--limit", type=click.IntRange(1), default=20, show_default=True, help="How many runs, newest first."
)
@format_option
def runs(database_url: str, limit: int, fmt: str) -> None:
    """List recent sync runs: status, duration, counts and errors.

    \b
    Examples:
      archiver runs
      archiver runs --format json --limit 1

    \b
    Exit status: 0 runs listed; 1 no archive, database unreachable or schema out of date;
    2 usage error.
    """
    engine = query.open_archive(database_url)
    with query.results(engine, reports.runs(limit)) as rows:
        print_rows(rows.columns, rows.rows, fmt)


@click.command()
@database_option
@duration_option(
    "--max-age", "26h", "Error when the last successful run ended longer ago than this (dbt's error_after)."
)
@duration_option(
    "--warn-age",
    None,
    "Warn when the last successful run ended longer ago than this (dbt's warn_after); default: never.",
)
@duration_option(
    "--max-run-time",
    "24h",
    "Error when a run has been running longer than this: stuck, or killed (sync's option of that name).",
)
@duration_option(
    "--drain-window",
    "7d",
    "Warn of a job or project that lost more than half of its checkpoints within this long (sync's option).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="A line per check for people, or one JSON document: status, exit_code and checks.",
)
def check(
    database_url: str,
    max_age: timedelta,
    warn_age: timedelta | None,
    max_run_time: timedelta,
    drain_window: timedelta,
    fmt: str,
) -> None:
    """Say whether last night's sync worked: a line per check.

    \b
    Checks: the database is reachable, the schema current, the last run succeeded, the last
    successful run is recent enough, no run is stuck, no job or project is draining away
    (more than half of its checkpoints marked deleted within --drain-window). It only reads the archive.

    \b
    Exit status: 0 every check ok; 4 a warning (the last run partial or interrupted, or older
    than --warn-age, or a scope draining); 5 an error (database unreachable, schema out of date, the last run
    failed, no success within --max-age, a run stuck); 2 usage error.

    \b
    Examples:
      archiver check --max-age 26h
      archiver check --format json --warn-age 25h --max-age 50h
    """
    limits = health.Limits(
        max_age=max_age, warn_age=warn_age, max_run_time=max_run_time, drain_window=drain_window
    )
    findings = health.check_archive(database_url, limits)
    click.echo(health.render(findings, fmt, with_typed_options))
    sys.exit(health.exit_code(findings))
