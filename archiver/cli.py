"""The `archiver` command line: parse options, call one function, render. No SQL, no HTTP."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import stat
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import sqlalchemy as sa
from click.core import ParameterSource

from archiver import (
    __version__,
    access,
    backup,
    db,
    docs,
    durations,
    health,
    ledger,
    logs,
    metrics,
    migrate,
    outcome,
    query,
    reports,
)
from archiver.client import (
    DEFAULT_API_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RESPONSE_MB,
    DEFAULT_MAX_RPS,
    RetryPolicy,
)
from archiver.errors import ArchiverError, DatabaseUnavailable, InternalError, NeedsConfirmation, UsageError
from archiver.logs import configure_logging
from archiver.output import FORMATS, progress_line, render, render_chunks, use_color
from archiver.schema import SCHEMA_REVISION
from archiver.sync import ApiSettings, Scope, SyncOptions, sync_archive

log = logging.getLogger("archiver")
F = TypeVar("F", bound=Callable[..., Any])

DATABASE_URL_ENVVAR = "ARCHIVER_DATABASE_URL"
ENVIRONMENT = ("ARCHIVER_", "BASETEN_")  # the prefixes of the variables the options read
_TYPED_DATABASE_URL = "archiver.database_url"  # the --database-url typed on the command line, masked
# A night's run must end before `archiver check --max-run-time` (24h) calls it stuck.
DEFAULT_MAX_RUN_TIME = "23h"
DEFAULT_MAX_RATE_LIMITED = "30m"
_SUGGESTED_COMMAND = re.compile(r"`(archiver(?: [^`]*)?)`")


def _remember_database_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if param.name is not None and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        ctx.meta[_TYPED_DATABASE_URL] = db.redact(value)
    return value


database_option = click.option(
    "--database-url",
    envvar=DATABASE_URL_ENVVAR,
    show_envvar=True,
    default=db.DEFAULT_DATABASE_URL,
    show_default=True,
    callback=_remember_database_url,
    help="SQLAlchemy URL of the archive: sqlite:///path.db or postgresql://user@host/db.",
)


def with_typed_options(text: str) -> str:
    """Give each `archiver ...` command a message suggests the --database-url the user typed, masked.

    Copied as it was, `archiver db upgrade` would have migrated the default archive instead. A URL
    from the environment needs no repeating: the suggested command reads it there too.
    """
    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(_TYPED_DATABASE_URL) if ctx is not None else None
    if url is None:
        return text

    def add(match: re.Match[str]) -> str:
        command = match[1]
        if "--database-url" in command or not _takes_database_url(command.split()[1:]):
            return match[0]
        return f"`{command} --database-url {shlex.quote(url)}`"

    return _SUGGESTED_COMMAND.sub(add, text)


def _takes_database_url(words: list[str]) -> bool:
    command: click.Command = cli
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
    # demo's --database-url is its own (never the archive's): only the shared option counts.
    return any(isinstance(p, click.Option) and p.envvar == DATABASE_URL_ENVVAR for p in command.params)


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
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise click.BadParameter(
            f"{value!r} is longer than a calendar can count", param_hint=option
        ) from None


def duration_option(name: str, default: str | None, help_text: str) -> Callable[[F], F]:
    """An option that takes a duration (90s, 15m, 6h, 7d or seconds) as a timedelta; None if not given."""
    return click.option(
        name,
        default=default,
        show_default=default is not None,
        metavar="DURATION",
        callback=lambda _ctx, _param, value: None if value is None else _duration(value, name),
        help=help_text,
    )


def _query_timeout(value: str) -> float | None:
    """Read --timeout: a duration, or 0 / none for no limit."""
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        seconds = durations.parse_seconds(value)
    except ValueError:
        raise click.BadParameter(
            f"expected a duration such as 30s, 5m or 1h (0 or none: no limit); got {value!r}",
            param_hint="--timeout",
        ) from None
    return seconds or None


timeout_option = click.option(
    "--timeout",
    default=query.DEFAULT_TIMEOUT,
    show_default=True,
    metavar="DURATION",
    callback=lambda _ctx, _param, value: _query_timeout(value),
    help="Stop the statement when it has run this long in the database (30s, 5m, 1h; 0 or none: no limit). "
    "Exit status 124.",
)


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
        configure_logging()  # from the defaults: in-process callers run many commands
        wants_json = logs.asks_for_json(ctx.args)
        try:
            _refuse_undecodable(ctx.args)
            return super().invoke(ctx)
        except click.ClickException as exc:
            if not wants_json:
                raise
            configure_logging(log_format="json")  # the option's own callback never ran
            logs.say(
                exc.format_message(), err=True, level="error", event="usage_error", exit_code=exc.exit_code
            )
            ctx.exit(exc.exit_code)
        except ArchiverError as exc:
            say_error(exc)
            ctx.exit(exc.exit_code)
        except sa.exc.DBAPIError as exc:
            # A safety net: expected database failures are ArchiverErrors already.
            say_error(DatabaseUnavailable(f"database error: {db.describe_db_error(exc)}"))
            ctx.exit(1)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            # The last net: a bug, said in one line (the traceback goes to the debug log, -vv).
            log.debug("internal error", exc_info=True)
            say_error(InternalError(exc))
            ctx.exit(InternalError.exit_code)


def _refuse_undecodable(args: list[str]) -> None:
    """Refuse bytes that are not UTF-8 (Python holds them as surrogates, which no database or URL takes).

    Only where they are is said: the text itself may be a key.
    """
    # The group's own args start after the command's name, argument 1.
    given = [f"argument {n}" for n, arg in enumerate(args, 2) if not _is_utf8(arg)]
    given += [
        name for name, value in os.environ.items() if name.startswith(ENVIRONMENT) and not _is_utf8(value)
    ]
    if given:
        raise UsageError(f"{', '.join(given)} is not UTF-8 text: give it again as UTF-8")


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def say_error(exc: ArchiverError) -> None:
    """Report an error on stderr: one line, or one JSON event with --log-format json."""
    message = with_typed_options(str(exc))
    logs.say(
        message if logs.json_output() else f"error: {message}",
        err=True,
        level="error",
        event="error",
        error=type(exc).__name__,
        exit_code=exc.exit_code,
    )


def _configure_logging(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"archiver.{param.name}"] = value
    verbose, quiet = ctx.meta.get("archiver.verbose", 0), ctx.meta.get("archiver.quiet", False)
    if verbose and quiet:
        raise click.UsageError("--quiet and -v ask for opposite things: give one of them", ctx)
    configure_logging(verbose, ctx.meta.get("archiver.log_format", "text"), quiet=quiet)
    return value


def logging_options(command: F) -> F:
    """Add -v and --log-format to a command (they work before or after its name)."""
    command = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_configure_logging,
        help="-v: a line per project and job on stderr; -vv: debug, with every request.",
    )(command)
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        expose_value=False,
        callback=_configure_logging,
        is_eager=True,
        help="Text (log lines stamped in UTC), or JSON: every line written, stdout and stderr, one JSON object.",
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


def _metrics_file(path: Path | None) -> Path | None:
    """Refuse, before the run, a metrics file whose directory is missing: the run's metrics would be lost."""
    if path is not None and not path.parent.is_dir():
        raise click.BadParameter(
            f"no directory {path.parent} to write {path.name} in", param_hint="--metrics-file"
        )
    return path


def _read_api_key(api_key: str | None, api_key_file: Path | None) -> str:
    if api_key_file is not None and api_key:
        ctx = click.get_current_context()
        given = "--api-key" if ctx.get_parameter_source("api_key") is ParameterSource.COMMANDLINE else None
        raise UsageError(
            f"{given or 'BASETEN_API_KEY'} and --api-key-file both give a key: keep one "
            f"({'drop --api-key' if given else 'unset BASETEN_API_KEY'}, or drop --api-key-file)"
        )
    if api_key_file is not None:
        try:
            key = api_key_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --api-key-file {api_key_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(
                f"--api-key-file {api_key_file} is not text: it should hold the key alone"
            ) from None
        if not key:
            raise UsageError(f"--api-key-file {api_key_file} is empty")
        _warn_if_shared(api_key_file)
        return key
    if not api_key:
        raise UsageError(
            "no API key: set BASETEN_API_KEY, or pass --api-key-file PATH "
            "(try `archiver demo` to see the archiver work without one)"
        )
    return api_key


def _warn_if_shared(key_file: Path) -> None:
    """Warn, as ssh does, when users other than the owner may read or change the key file."""
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "--api-key-file %s is open to other users (mode %04o): make it its owner's alone, chmod 600 %s",
            key_file,
            mode,
            key_file,
            extra={"event": "key_file_open"},
        )


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
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=lambda _ctx, _param, value: _metrics_file(value),
    help="After every run, however it ends, write Prometheus metrics here (node_exporter's textfile "
    "collector: a *.prom file in its directory), atomically.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    callback=_configure_logging,
    help="Print nothing when the run succeeds; errors and failed jobs still go to stderr (for cron's MAILTO).",
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
    help="Seconds one try of a request may take, from sending it to the last byte of the answer.",
)
@click.option(
    "--max-response-mb",
    type=click.IntRange(1),
    default=DEFAULT_MAX_RESPONSE_MB,
    show_default=True,
    help="A response larger than this many MiB fails its job (checked as it arrives).",
)
@duration_option(
    "--max-rate-limited-time",
    DEFAULT_MAX_RATE_LIMITED,
    "Stop the run early (partial, exit 3) once it has spent this long waiting on the API's 429s "
    "(90s, 15m, 6h or seconds), so that a rate-limit storm does not block the next night.",
)
@duration_option(
    "--max-run-time",
    DEFAULT_MAX_RUN_TIME,
    "Stop the run early (partial, exit 3) once it has run this long; below `archiver check "
    "--max-run-time` (24h), so that a long run ends before check calls it stuck.",
)
@click.option(
    "--max-clock-skew",
    envvar="ARCHIVER_MAX_CLOCK_SKEW",
    show_envvar=True,
    default="5m",
    show_default=True,
    metavar="DURATION",
    callback=lambda _ctx, _param, value: _duration(value, "--max-clock-skew"),
    help="Refuse to run (exit 2, nothing written) when the machine clock and the API's Date header "
    "differ by more than this (90s, 15m, 6h or seconds): every stamp in the archive comes from the clock.",
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
    max_response_mb: int,
    max_rate_limited_time: timedelta,
    max_run_time: timedelta,
    max_clock_skew: timedelta,
    metrics_file: Path | None,
    quiet: bool,
) -> None:
    """Archive projects, jobs and checkpoints from the Baseten API.

    \b
    By default a run skips jobs whose checkpoints cannot have changed (a terminal job whose
    updated_at has not moved since a read that found every checkpoint uploaded); --full
    re-reads everything.

    \b
    Exit status: 0 everything archived; 1 fatal (bad key, API or database unreachable,
    schema out of date, sync lock lost); 2 usage error, or the clock is off (--max-clock-skew); 3 some jobs failed (named on stderr), or the run
    stopped early at --max-run-time or --max-rate-limited-time; 75 another
    sync is running on this database (nothing done: harmless, try later); 130 interrupted
    by SIGINT/SIGTERM (what was complete is committed).

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
        max_run_time=max_run_time,
        max_clock_skew=max_clock_skew,
        progress=progress_line(),
        on_finish=(recorder := outcome.Recorder()).finished,
    )
    retry = RetryPolicy(attempts=max_attempts, deadline_s=max_retry_seconds, timeout_s=timeout)
    key = _read_api_key(api_key, api_key_file)
    api = ApiSettings(key, api_url, max_rps, concurrency, retry, max_response_mb, max_rate_limited_time)
    ended = recorder.run(lambda: sync_archive(database_url, api, options))
    if options.progress is not None:
        click.echo("\r\033[K", err=True, nl=False)  # clear the progress line
    if metrics_file is not None:
        metrics.write(metrics_file, ended, database_url)
    _tell(ended, quiet=quiet)
    sys.exit(ended.exit_code)


def _tell(ended: outcome.Outcome, *, quiet: bool) -> None:
    """Say how a sync ended: the error if fatal, then the summary (in JSON: an event holding every counter).

    Quiet, a run that succeeded says nothing at all.
    """
    if ended.error is not None:
        say_error(ended.error)
    if quiet and ended.exit_code == 0:
        return
    if logs.json_output():
        level = "info" if ended.exit_code == 0 else "error" if ended.status == ledger.FAILED else "warning"
        logs.say(with_typed_options(ended.message), event="summary", level=level, **ended.fields())
    elif ended.error is None:
        click.echo(ended.message)
        for failure in ended.report.failures:
            click.echo(f"failed: {failure}", err=True)


@cli.command()
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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="A line per check for people, or a JSON object per check.",
)
def check(
    database_url: str, max_age: timedelta, warn_age: timedelta | None, max_run_time: timedelta, fmt: str
) -> None:
    """Say whether last night's sync worked: a line per check.

    \b
    Checks: the database is reachable, the schema current, the last run succeeded, the last
    successful run is recent enough, no run is stuck. It only reads the archive.

    \b
    Exit status: 0 every check ok; 4 a warning (the last run partial or interrupted, or older
    than --warn-age); 5 an error (database unreachable, schema out of date, the last run
    failed, no success within --max-age, a run stuck); 2 usage error.

    \b
    Examples:
      archiver check --max-age 26h
      archiver check --format json --warn-age 25h --max-age 50h
    """
    limits = health.Limits(max_age=max_age, warn_age=warn_age, max_run_time=max_run_time)
    findings = health.check_archive(database_url, limits)
    for finding in findings:
        click.echo(finding.render(fmt, with_typed_options))
    sys.exit(health.exit_code(findings))


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
    """Rebuild an archive by replaying the API responses it kept.

    \b
    Into an empty database. Every run is replayed in order through the same code, with its
    own time, scope and options: the result equals the archive. After a parser fix, the
    rebuilt archive is what the archive would have been: this is how a fix reaches the past.

    \b
    Examples:
      archiver rebuild --database-url sqlite:///rebuilt.db
      archiver rebuild --from postgresql://archiver@db/archive --database-url postgresql://archiver@db/rebuilt
    """
    from archiver.rebuild import rebuild as replay

    report = replay(source_url, target_url)
    logs.say(report.summary(), event="summary")


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
@click.option(
    "--yes", is_flag=True, help="Go ahead even though the downgrade deletes data (back it up first)."
)
def downgrade(revision: str, database_url: str, yes: bool) -> None:
    """Step the schema back to REVISION.

    \b
    'base' removes every archive table. A downgrade that would delete data (tables with
    rows, columns with values: history, the run ledger) says what, and how to back up
    first, and changes nothing unless given --yes.
    """
    engine = db.make_engine(db.require_existing(database_url))
    db.check_connection(engine)
    if not yes and (losses := migrate.downgrade_losses(engine, revision)):
        raise NeedsConfirmation(
            f"downgrading to {revision} would delete {'; '.join(map(str, losses))}. Nothing was changed: "
            f"{backup.how_to_back_up(engine.url)}, then run `archiver db downgrade {revision} --yes`"
        )
    migrate.downgrade(engine, revision)
    click.echo(f"{db.redact(engine.url)} is at revision {migrate.current_revision(engine) or 'base'}")


@db_group.command(name="grant-read")
@click.argument("role")
@database_option
def grant_read(role: str, database_url: str) -> None:
    """Let a PostgreSQL role read the archive, now and after upgrades.

    \b
    Grants ROLE USAGE on the schema and SELECT on every table and view, and default
    privileges FOR ROLE the archive's owner, so that tables and views later migrations
    create are readable too. Run it as the archive's owner or a superuser.

    \b
    Example:
      psql -c "CREATE ROLE archiver_reader LOGIN PASSWORD '...'"
      archiver db grant-read archiver_reader
    """
    engine = db.make_engine(db.require_existing(database_url))
    db.check_connection(engine)
    schema, owners = access.grant_read(engine, role)
    click.echo(
        f"{role} may read every table and view in schema {schema} of {db.redact(engine.url)}, and those "
        f"that {' and '.join(owners)} create in later migrations"
    )


@db_group.command(name="backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@database_option
def backup_command(path: Path, database_url: str) -> None:
    """Copy a SQLite archive to PATH, consistently, while it is in use.

    \b
    The copy is a new file only you can read (0600); readers and even a running sync go on
    meanwhile. For PostgreSQL, use pg_dump (the message says how).
    """
    size = backup.backup_sqlite(database_url, path)
    click.echo(f"backed up {db.redact(database_url)} to {path} ({size} bytes)")


@db_group.command()
@database_option
def current(database_url: str) -> None:
    """Show which schema revision the archive is at.

    \b
    It reads the archive only: a missing SQLite file is an error, never a new archive.
    """
    engine = db.open_existing(database_url)
    at = migrate.current_revision(engine)
    head = SCHEMA_REVISION
    if at is not None and at != head and at not in migrate.known_revisions():
        click.echo(f"{at} (head {head}): {migrate.unknown_revision(at)}")
        return
    state = "up to date" if at == head else "out of date: run `archiver db upgrade`"
    click.echo(with_typed_options(f"{at or 'base (empty)'} (head {head}, {state})"))


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
    """Archive a fake organisation: no API key needed.

    \b
    Serves a generated organisation from the built-in fake API on loopback, archives it with
    the real sync, and prints storage by project.
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


@cli.command(name="fake-api")
@logging_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8008, show_default=True, help="Port (0: any free port)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated organisation.")
@click.option(
    "--projects", type=click.IntRange(0), default=3, show_default=True, help="Projects to generate."
)
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
    """Serve a fake Baseten API for trials and tests.

    A generated organisation, for trials, tests and benchmarks.

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
        ready=lambda url: logs.say(
            f"Fake Baseten API on {url} ({fake.DEFAULT_API_KEY if api_key is None else 'your --api-key'}"
            " as the key). Ctrl-C stops it.",
            err=True,
            event="listening",
            url=url,
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
    2 the statement was refused (a write, several statements) or the database rejected it;
    124 stopped by --timeout.

    \b
    Examples:
      archiver query "SELECT project_name, SUM(size_bytes) AS size_bytes FROM checkpoint_facts GROUP BY 1"
      archiver query --format csv "SELECT * FROM job_facts" > jobs.csv
    """
    engine = query.open_archive(database_url)
    with query.results(engine, sql, as_of, timeout) as rows:
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
    """Print what every table, view and column means.

    PostgreSQL archives carry the same descriptions as comments.

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
    """Ready-made reports over the views.

    `archiver query` answers anything else.
    """


@report.command(name="storage")
@database_option
@format_option
@timeout_option
def storage_report(database_url: str, fmt: str, timeout: float | None) -> None:
    """Checkpoint storage by project, largest first.

    Live (still on Baseten) and archived (deleted there, kept here).
    """
    engine = query.open_archive(database_url)
    with query.results(engine, reports.storage(), timeout=timeout) as rows:
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
    """
    cutoff = reports.parse_since(since) if since else None
    engine = query.open_archive(database_url)
    with query.results(engine, reports.jobs(statuses, cutoff, projects), timeout=timeout) as rows:
        _echo_rows(rows, fmt)


@report.command(name="checkpoints")
@click.option("--job", "jobs", multiple=True, required=True, metavar="JOB_ID", help="Job (repeatable).")
@database_option
@format_option
@timeout_option
def checkpoints_report(jobs: tuple[str, ...], database_url: str, fmt: str, timeout: float | None) -> None:
    """A job's checkpoints, deleted ones included.

    Oldest first; a checkpoint deleted on Baseten has deleted_at set.
    """
    engine = query.open_archive(database_url)
    reports.require_jobs(engine, jobs)
    with query.results(engine, reports.checkpoints(jobs), timeout=timeout) as rows:
        _echo_rows(rows, fmt)


def main() -> NoReturn:
    """Entry point of the `archiver` console script."""
    cli.main(prog_name="archiver")
    raise SystemExit(0)
