"""`archiver sync`: archive the organisation, then say how the run ended."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from click.core import ParameterSource

from archiver import credentials, durations, ledger, logs, metrics, outcome
from archiver.client import (
    DEFAULT_API_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RESPONSE_MB,
    DEFAULT_MAX_RPS,
    RetryPolicy,
)
from archiver.commands.shared import (
    configure_logging_option,
    database_option,
    duration,
    duration_option,
    logging_options,
    say_error,
    with_typed_options,
)
from archiver.progress import SyncProgress
from archiver.sync import ApiSettings, Scope, SyncOptions, sync_archive

# A night's run must end before `archiver check --max-run-time` (24h) calls it stuck.
DEFAULT_MAX_RUN_TIME = "23h"
DEFAULT_MAX_RATE_LIMITED = "30m"


def _progress_interval(value: str) -> float:
    """Read --progress-interval: a duration, or 0 for a record at every step."""
    try:
        seconds = durations.parse_seconds(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise click.BadParameter(
            f"expected a duration such as {durations.EXAMPLES} (or plain seconds, 0 for every step); got {value!r}",
            param_hint="--progress-interval",
        )
    return seconds


def _metrics_file(path: Path | None) -> Path | None:
    """Refuse, before the run, a metrics file whose directory is missing: the run's metrics would be lost."""
    if path is not None and (problem := metrics.missing_directory(path)):
        raise click.BadParameter(problem, param_hint="--metrics-file")
    return path


@click.command()
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
    callback=configure_logging_option,
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
    callback=lambda _ctx, _param, value: duration(value, "--recheck-after"),
    help="Re-read each job the incremental sync skips at least this often (90s, 15m, 6h, 7d or seconds); "
    "the re-reads are spread over the nights.",
)
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Accept, for this run, listings that would mark more than half of what they cover, or of the "
    "checkpoints beneath it, deleted (refused by default as a likely bad response).",
)
@click.option(
    "--drain-window",
    default="7d",
    show_default=True,
    metavar="DURATION",
    callback=lambda _ctx, _param, value: duration(value, "--drain-window"),
    help="Warn of a job or project that lost more than half of its checkpoints within this long.",
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
    callback=lambda _ctx, _param, value: duration(value, "--max-clock-skew"),
    help="Refuse to run (exit 2, nothing written) when the machine clock and the API's Date header "
    "differ by more than this (90s, 15m, 6h or seconds): every stamp in the archive comes from the clock.",
)
@click.option(
    "--progress-interval",
    default="30s",
    show_default=True,
    metavar="DURATION",
    callback=lambda _ctx, _param, value: _progress_interval(value),
    help="With --log-format json, write a progress record (jobs and checkpoints done, rate, time left) this "
    "often (90s, 15m or seconds; 0: at every step). A terminal shows a live bar instead.",
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
    drain_window: timedelta,
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
    progress_interval: float,
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
        drain_window=drain_window,
        recheck_after=recheck_after,
        concurrency=concurrency,
        migrate=migrate_schema,
        max_run_time=max_run_time,
        max_clock_skew=max_clock_skew,
        progress=progress if (progress := SyncProgress(progress_interval)).active else None,
        on_finish=(recorder := outcome.Recorder()).finished,
    )
    retry = RetryPolicy(attempts=max_attempts, deadline_s=max_retry_seconds, timeout_s=timeout)
    typed = click.get_current_context().get_parameter_source("api_key") is ParameterSource.COMMANDLINE
    key = credentials.read_api_key(api_key, api_key_file, typed=typed)
    api = ApiSettings(key, api_url, max_rps, concurrency, retry, max_response_mb, max_rate_limited_time)
    with progress:  # the bar is cleared before the summary
        ended = recorder.run(lambda: sync_archive(database_url, api, options))
    if metrics_file is not None:
        problem = metrics.write(metrics_file, ended, database_url)
        if problem is not None and ended.report.run_id is not None:  # for `archiver check` to say
            ledger.add_error(database_url, ended.report.run_id, ledger.METRICS, problem, datetime.now(UTC))
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
