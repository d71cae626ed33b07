"""`archiver query`: one read-only SQL statement, its rows printed."""

from __future__ import annotations

from datetime import datetime

import click

from archiver import query
from archiver.commands.shared import as_of_option, database_option, format_option, timeout_option
from archiver.output import print_rows


@click.command(name="query")
@click.argument("sql")
@database_option
@format_option
@as_of_option
@timeout_option
def query_command(
    sql: str, database_url: str, fmt: str, as_of: datetime | None, timeout: float | None
) -> None:
    """Run one read-only SQL statement and print its rows.

    \b
    The views checkpoint_facts, job_facts and project_storage_daily are the place to start;
    docs/schema.md describes every table, view and column. Writes are refused, by this
    command and by the database (SQLite query_only, PostgreSQL READ ONLY transaction).

    \b
    Exit status: 0 rows printed; 1 no archive, database unreachable or schema out of date;
    2 usage error, or the statement was refused (a write, several statements) or the database rejected it;
    124 stopped by --timeout.

    \b
    Examples:
      archiver query "SELECT project_name, SUM(size_bytes) AS size_bytes FROM checkpoint_facts GROUP BY 1"
      archiver query --format csv "SELECT * FROM job_facts" > jobs.csv
    """
    engine = query.open_archive(database_url)
    if as_of is not None and (early := query.before_first_sync(engine, as_of)):
        click.echo(f"warning: {early}", err=True)
    with query.results(engine, sql, as_of, timeout) as rows:
        print_rows(rows.columns, rows.rows, fmt)
