"""`archiver report ...`: ready-made reports over the views."""

from __future__ import annotations

import click

from archiver import query, reports
from archiver.commands.shared import database_option, format_option, timeout_option
from archiver.output import print_rows


@click.group()
def report() -> None:
    """Ready-made reports over the views.

    `archiver query` answers anything else.

    \b
    Exit status (each report): 0 rows printed; 1 no archive, database unreachable or schema
    out of date; 2 usage error, or no such job (checkpoints); 124 stopped by --timeout.
    """


@report.command(name="storage")
@database_option
@format_option
@timeout_option
def storage_report(database_url: str, fmt: str, timeout: float | None) -> None:
    """Checkpoint storage by project, largest first.

    Live (still on Baseten) and archived (deleted there, kept here).

    \b
    Exit status: 0 rows printed; 1 no archive, database unreachable or schema out of date;
    2 usage error; 124 stopped by --timeout.
    """
    engine = query.open_archive(database_url)
    with query.results(engine, reports.storage(), timeout=timeout) as rows:
        print_rows(rows.columns, rows.rows, fmt)


@report.command(name="jobs")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help="Only jobs in this status, e.g. FAILED or RUNNING (repeatable; TRAINING_JOB_ is optional).",
)
@click.option(
    "--since", metavar="WHEN", help="Only jobs updated since: 7d, 24h, 30m, 2w or an ISO date (UTC)."
)
@click.option("--project", "projects", multiple=True, metavar="ID", help="Only this project (repeatable).")
@database_option
@format_option
@timeout_option
def jobs_report(
    statuses: tuple[str, ...],
    since: str | None,
    projects: tuple[str, ...],
    database_url: str,
    fmt: str,
    timeout: float | None,
) -> None:
    """Jobs, newest first, with storage and GPU hours.

    Most recently updated first, with checkpoint counts, storage and GPU hours.

    \b
    Example: archiver report jobs --status FAILED --since 7d

    \b
    Exit status: 0 rows printed; 1 no archive, database unreachable or schema out of date;
    2 usage error; 124 stopped by --timeout.
    """
    cutoff = reports.parse_since(since) if since else None
    engine = query.open_archive(database_url)
    with query.results(engine, reports.jobs(statuses, cutoff, projects), timeout=timeout) as rows:
        print_rows(rows.columns, rows.rows, fmt)


@report.command(name="checkpoints")
@click.option("--job", "jobs", multiple=True, required=True, metavar="JOB_ID", help="Job (repeatable).")
@database_option
@format_option
@timeout_option
def checkpoints_report(jobs: tuple[str, ...], database_url: str, fmt: str, timeout: float | None) -> None:
    """A job's checkpoints, deleted ones included.

    Oldest first; a checkpoint deleted on Baseten has deleted_at set.

    \b
    Exit status: 0 rows printed; 1 no archive, database unreachable or schema out of date;
    2 usage error, or no such job; 124 stopped by --timeout.
    """
    engine = query.open_archive(database_url)
    reports.require_jobs(engine, jobs)
    with query.results(engine, reports.checkpoints(jobs), timeout=timeout) as rows:
        print_rows(rows.columns, rows.rows, fmt)
