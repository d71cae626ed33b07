"""The `archiver` command line: parse options, call one function, render. No SQL, no HTTP."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import sqlalchemy as sa

from archiver import __version__, db, docs, durations, migrate, query, reports
from archiver.client import DEFAULT_API_URL, DEFAULT_CONCURRENCY, DEFAULT_MAX_RPS, RetryPolicy
from archiver.errors import ArchiverError, UsageError
from archiver.logs import configure_logging
from archiver.output import FORMATS, progress_line, render, render_chunks, use_color
from archiver.schema import SCHEMA_REVISION
from archiver.sync import ApiSettings, Scope, SyncOptions, sync_archive

log = logging.getLogger("archiver")
F = TypeVar("F", bound=Callable[..., Any])

database_option = click.option(
    "--database-url",
    envvar="ARCHIVER_DATABASE_URL",
    show_envvar=True,
    default=db.DEFAULT_DATABASE_URL,
    show_default=True,
    help="SQLAlchemy URL of the archive: sqlite:///path.db or postgresql://user@host/db.",
)


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people (aligned, sizes like 1.5 GiB); csv, json or jsonl for programs (raw numbers).",
)


def _duration(value: str, option: str) -> timedelta:
    """Read a duration option (90s, 15m, 6h, 7d or plain seconds)."""
    try:
        seconds = durations.parse_seconds(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise click.BadParameter(
            f"expected a duration longer than zero, such as {durations.EXAMPLES} (or plain seconds); got {value!r}",
            param_hint=option,
        )
    return timedelta(seconds=seconds)


def _echo_rows(rows: query.Rows, fmt: str) -> None:
    color = use_color(sys.stdout)
    try:
        for chunk in render_chunks(rows.columns, rows.rows, fmt, color=color):
            click.echo(chunk, nl=False, color=color)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (head, less) has gone: stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


class ArchiverGroup(click.Group):
    """Turn the archiver's errors into messages and exit statuses, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArchiverError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except sa.exc.DBAPIError as exc:
            # A safety net: expected database failures are ArchiverErrors already.
            click.echo(f"error: database error: {db.describe_db_error(exc)}", err=True)
            ctx.exit(1)


def _configure_verbosity(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    ctx.meta["archiver.verbose"] = value if isinstance(value, int) else ctx.meta.get("archiver.verbose", 0)
    if isinstance(value, str):
        ctx.meta["archiver.log_format"] = value
    configure_logging(ctx.meta.get("archiver.verbose", 0), ctx.meta.get("archiver.log_format", "text"))
    return value


def logging_options(command: F) -> F:
    """Add -v and --log-format to a command (they work before or after its name)."""
    command = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_configure_verbosity,
        help="-v: a line per project and job on stderr; -vv: debug, with every request.",
    )(command)
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        expose_value=False,
        callback=_configure_verbosity,
        is_eager=True,
        help="Log lines on stderr as text, or one JSON object per event.",
    )(command)


@click.group(cls=ArchiverGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="archiver")
def cli() -> None:
    """Archive Baseten training checkpoints into SQLite or PostgreSQL.

    \b
    Try it without an API key:   archiver demo
    Archive your organisation:   BASETEN_API_KEY=... archiver sync
    Query the archive:           archiver query 'SELECT * FROM checkpoint_facts LIMIT 5'
    """


def _read_api_key(api_key: str | None, api_key_file: Path | None) -> str:
    if api_key_file is not None:
        try:
            key = api_key_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --api-key-file {api_key_file}: {exc.strerror}") from None
        if not key:
            raise UsageError(f"--api-key-file {api_key_file} is empty")
        return key
    if not api_key:
        raise UsageError(
            "no API key: set BASETEN_API_KEY, or pass --api-key-file PATH "
            "(try `archiver demo` to see the archiver work without one)"
        )
    return api_key


@cli.command()
@logging_options
@click.option(
    "--api-key",
    envvar="BASETEN_API_KEY",
    show_envvar=True,
    default=None,
    show_default=False,
    help="Baseten API key (prefer the environment variable or --api-key-file).",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the API key from this file (for cron setups that keep secrets out of the environment).",
)
@click.option(
    "--api-url",
    envvar="BASETEN_API_URL",
    show_envvar=True,
    default=DEFAULT_API_URL,
    show_default=True,
    help="Base URL of the Baseten API.",
)
@database_option
@click.option("--project", "projects", multiple=True, metavar="ID", help="Only this project (repeatable).")
@click.option("--job", "jobs", multiple=True, metavar="JOB_ID", help="Only this job (repeatable).")
@click.option(
    "--full", is_flag=True, help="Re-read every job's checkpoints, even those that cannot have changed."
)
@click.option(
    "--migrate", "migrate_schema", is_flag=True, help="Upgrade an out-of-date schema before syncing."
)
@click.option(
    "--recheck-after",
    default="7d",
    show_default=True,
    metavar="DURATION",
    callback=lambda _ctx, _param, value: _duration(value, "--recheck-after"),
    help="Re-read each job the incremental sync skips at least this often (90s, 15m, 6h, 7d or seconds); "
    "the re-reads are spread over the nights.",
)
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Accept, for this run, listings that would mark more than half of what they cover deleted "
    "(refused by default as a likely bad response).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--max-rps",
    type=click.FloatRange(0.1),
    default=DEFAULT_MAX_RPS,
    show_default=True,
    help="Requests per second at most (the API allows 100 per key; more is for local fakes).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 100),
    default=RetryPolicy.attempts,
    show_default=True,
    help="Tries per request before its job fails (429, 5xx, resets and timeouts are retried).",
)
@click.option(
    "--max-retry-seconds",
    type=click.FloatRange(0),
    default=RetryPolicy.deadline_s,
    show_default=True,
    help="Time one request may spend retrying, waits included.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=RetryPolicy.timeout_s,
    show_default=True,
    help="Seconds to wait for one response.",
)
def sync(
    api_key: str | None,
    api_key_file: Path | None,
    api_url: str,
    database_url: str,
    projects: tuple[str, ...],
    jobs: tuple[str, ...],
    full: bool,
    migrate_schema: bool,
    recheck_after: timedelta,
    allow_mass_delete: bool,
    concurrency: int,
    max_rps: float,
    max_attempts: int,
    max_retry_seconds: float,
    timeout: float,
) -> None:
    """Archive projects, jobs and checkpoints from the Baseten API.

    \b
    By default a run skips jobs whose checkpoints cannot have changed (a terminal job whose
    updated_at has not moved since a read that found every checkpoint uploaded); --full
    re-reads everything.

    \b
    Exit status: 0 everything archived; 1 fatal (bad key, API or database unreachable,
    schema out of date, another sync running); 2 usage error; 3 some jobs failed (named on
    stderr); 130 interrupted by SIGINT/SIGTERM (what was complete is committed).

    \b
    Examples:
      archiver sync
      archiver sync --project n4q95w5 --job p7qr9qv
      archiver sync --database-url postgresql://archiver@db.internal/archive
    """
    options = SyncOptions(
        Scope(projects, jobs),
        full=full,
        allow_mass_delete=allow_mass_delete,
        recheck_after=recheck_after,
        concurrency=concurrency,
        migrate=migrate_schema,
        progress=progress_line(),
    )
    retry = RetryPolicy(attempts=max_attempts, deadline_s=max_retry_seconds, timeout_s=timeout)
    api = ApiSettings(_read_api_key(api_key, api_key_file), api_url, max_rps, concurrency, retry)
    report = sync_archive(database_url, api, options)
    if options.progress is not None:
        click.echo("\r\033[K", err=True, nl=False)  # clear the progress line
    click.echo(report.summary())
    for failure in report.failures:
        click.echo(f"failed: {failure}", err=True)
    sys.exit(report.exit_code)


@cli.command()
@logging_options
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
    """
    engine = query.open_archive(database_url)
    with query.results(engine, reports.runs(limit)) as rows:
        _echo_rows(rows, fmt)


@cli.command()
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
    """Rebuild an archive into an empty database by replaying the API responses it kept.

    \b
    Every run is replayed in order through the same code, with its own time, scope and
    options: the result equals the archive. After a parser fix, the rebuilt archive is what
    the archive would have been: this is how a fix reaches the past.

    \b
    Examples:
      archiver rebuild --database-url sqlite:///rebuilt.db
      archiver rebuild --from postgresql://archiver@db/archive --database-url postgresql://archiver@db/rebuilt
    """
    from archiver.rebuild import rebuild as replay

    report = replay(source_url, target_url)
    click.echo(report.summary())


@cli.group(name="db")
def db_group() -> None:
    """Manage the archive's schema (Alembic migrations)."""


@db_group.command()
@click.argument("revision", default="head")
@database_option
def upgrade(revision: str, database_url: str) -> None:
    """Upgrade the schema to REVISION (default: the newest)."""
    engine = db.make_engine(database_url)
    db.check_connection(engine)
    migrate.upgrade(engine, revision)
    click.echo(f"{db.redact(engine.url)} is at revision {migrate.current_revision(engine)}")


@db_group.command()
@click.argument("revision")
@database_option
def downgrade(revision: str, database_url: str) -> None:
    """Downgrade the schema to REVISION ('base' removes every archive table)."""
    engine = db.make_engine(database_url)
    db.check_connection(engine)
    migrate.downgrade(engine, revision)
    click.echo(f"{db.redact(engine.url)} is at revision {migrate.current_revision(engine) or 'base'}")


@db_group.command()
@database_option
def current(database_url: str) -> None:
    """Show the schema revision of the archive and the newest one known."""
    engine = db.make_engine(database_url)
    db.check_connection(engine)
    at = migrate.current_revision(engine)
    head = SCHEMA_REVISION
    state = "up to date" if at == head else "out of date: run `archiver db upgrade`"
    click.echo(f"{at or 'base (empty)'} (head {head}, {state})")


@cli.command()
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
    """Archive a generated organisation from the built-in fake API: no key needed."""
    from archiver.demo import run_demo

    report, columns, rows = run_demo(database_url, seed)
    click.echo(report.summary())
    click.echo(f"\nArchive: {db.redact(database_url)}. Storage by project:\n")
    click.echo(render(columns, rows), nl=False)
    sys.exit(report.exit_code)


@cli.command(name="fake-api")
@logging_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8008, show_default=True, help="Port (0: any free port).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated organisation.")
@click.option("--projects", type=click.IntRange(0), default=3, show_default=True)
@click.option(
    "--jobs",
    "jobs_per_project",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Jobs per project.",
)
@click.option(
    "--checkpoints",
    "checkpoints_per_job",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Checkpoints per job.",
)
@click.option("--api-key", default=None, help="Key the server accepts (default: the fake's built-in key).")
@click.option(
    "--latency-ms",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Delay every response this long.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(0.1),
    default=None,
    help="Answer 429 above this many requests per second.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests that get a transient fault (429, 5xx, reset, delay, truncation).",
)
def fake_api(
    host: str,
    port: int,
    seed: int,
    projects: int,
    jobs_per_project: int,
    checkpoints_per_job: int,
    api_key: str | None,
    latency_ms: float,
    rate_limit: float | None,
    fault_rate: float,
) -> None:
    """Serve a fake Baseten API with a generated organisation, for trials, tests and benchmarks.

    \b
    Example:
      archiver fake-api --port 8008 &
      BASETEN_API_URL=http://127.0.0.1:8008 BASETEN_API_KEY=fake-baseten-key archiver sync
    """
    from archiver import fake_api as fake

    spec = fake.OrgSpec(
        seed=seed,
        projects=projects,
        jobs_per_project=jobs_per_project,
        checkpoints_per_job=checkpoints_per_job,
    )
    server = fake.FakeBaseten(
        spec,
        api_key=api_key or fake.DEFAULT_API_KEY,
        latency_ms=latency_ms,
        rate_limit_rps=rate_limit,
        faults=fake.Faults(seed=seed, rate=fault_rate) if fault_rate else None,
    )
    fake.serve_forever(
        server,
        host,
        port,
        ready=lambda url: click.echo(
            f"Fake Baseten API on {url} ({fake.DEFAULT_API_KEY if api_key is None else 'your --api-key'}"
            " as the key). Ctrl-C stops it.",
            err=True,
        ),
    )


as_of_option = click.option(
    "--as-of",
    metavar="WHEN",
    callback=lambda _ctx, _param, value: None if value is None else reports.parse_instant(value, "--as-of"),
    help="Read the archive as it stood then: every table and view means its state at that instant "
    "(ISO 8601 such as 2026-11-20T03:00:00Z, or a date: UTC midnight).",
)


@cli.command(name="query")
@click.argument("sql")
@database_option
@format_option
@as_of_option
def query_command(sql: str, database_url: str, fmt: str, as_of: datetime | None) -> None:
    """Run one read-only SQL statement on the archive and print its rows.

    \b
    The views checkpoint_facts, job_facts and project_storage_daily are the place to start;
    docs/schema.md describes every table, view and column. Writes are refused, by this
    command and by the database (SQLite query_only, PostgreSQL READ ONLY transaction).

    \b
    Exit status: 0 rows printed; 1 no archive, database unreachable or schema out of date;
    2 the statement was refused (a write, several statements) or the database rejected it.

    \b
    Examples:
      archiver query "SELECT project_name, SUM(size_bytes) AS size_bytes FROM checkpoint_facts GROUP BY 1"
      archiver query --format csv "SELECT * FROM job_facts" > jobs.csv
    """
    engine = query.open_archive(database_url)
    with query.results(engine, sql, as_of) as rows:
        _echo_rows(rows, fmt)


@cli.command(name="docs")
@click.option(
    "--markdown", "fmt", flag_value="markdown", default=True, help="Markdown sections (the default)."
)
@click.option(
    "--datasette", "fmt", flag_value="datasette", help="Datasette metadata JSON for a SQLite archive."
)
@database_option
def docs_command(fmt: str, database_url: str) -> None:
    """Print what every table, view and column means (PostgreSQL has them as comments too).

    \b
    Examples:
      archiver docs > schema.md
      archiver docs --datasette > metadata.json && datasette archive.db -m metadata.json
    """
    if fmt == "datasette":
        click.echo(json.dumps(docs.datasette_metadata(database_url), indent=2))
    else:
        click.echo(docs.markdown(), nl=False)


@cli.group()
def report() -> None:
    """Ready-made reports over the views; `archiver query` answers anything else."""


@report.command(name="storage")
@database_option
@format_option
def storage_report(database_url: str, fmt: str) -> None:
    """Checkpoint storage by project, largest first: live (still on Baseten) and archived."""
    engine = query.open_archive(database_url)
    with query.results(engine, reports.storage()) as rows:
        _echo_rows(rows, fmt)


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
def jobs_report(
    statuses: tuple[str, ...], since: str | None, projects: tuple[str, ...], database_url: str, fmt: str
) -> None:
    """Jobs, most recently updated first, with checkpoints, storage and GPU hours.

    \b
    Example: archiver report jobs --status FAILED --since 7d
    """
    cutoff = reports.parse_since(since) if since else None
    engine = query.open_archive(database_url)
    with query.results(engine, reports.jobs(statuses, cutoff, projects)) as rows:
        _echo_rows(rows, fmt)


@report.command(name="checkpoints")
@click.option("--job", "jobs", multiple=True, required=True, metavar="JOB_ID", help="Job (repeatable).")
@database_option
@format_option
def checkpoints_report(jobs: tuple[str, ...], database_url: str, fmt: str) -> None:
    """The checkpoints of a job, oldest first, deleted ones included (see deleted_at)."""
    engine = query.open_archive(database_url)
    reports.require_jobs(engine, jobs)
    with query.results(engine, reports.checkpoints(jobs)) as rows:
        _echo_rows(rows, fmt)


def main() -> NoReturn:
    """Entry point of the `archiver` console script."""
    cli.main(prog_name="archiver")
    raise SystemExit(0)
