"""`archiver docs`: what every table, view and column means."""

from __future__ import annotations

import json

import click

from archiver import docs
from archiver.commands.shared import database_option


@click.command(name="docs")
@click.option(
    "--markdown", "fmt", flag_value="markdown", default=True, help="Markdown sections (the default)."
)
@click.option(
    "--datasette", "fmt", flag_value="datasette", help="Datasette metadata JSON for a SQLite archive."
)
@database_option
def docs_command(fmt: str, database_url: str) -> None:
    """Print what every table, view and column means.

    PostgreSQL archives carry the same descriptions as comments.

    \b
    Exit status: 0 printed; 1 (--datasette) no archive or database unreachable;
    2 usage error (--datasette for a PostgreSQL archive).

    \b
    Examples:
      archiver docs > schema.md
      archiver docs --datasette > metadata.json && datasette archive.db -m metadata.json
    """
    if fmt == "datasette":
        click.echo(json.dumps(docs.datasette_metadata(database_url), indent=2))
    else:
        click.echo(docs.markdown(), nl=False)
