"""What every command shares: the common options, and how a message names the options the user typed."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from archiver import db, durations, logs
from archiver.errors import ArchiverError
from archiver.logs import configure_logging
from archiver.output import FORMATS

F = TypeVar("F", bound=Callable[..., Any])

DATABASE_URL_ENVVAR = "ARCHIVER_DATABASE_URL"
_TYPED_DATABASE_URL = "archiver.database_url"  # the --database-url typed on the command line, masked
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
    if ctx is None or url is None:
        return text
    root = ctx.find_root().command

    def add(match: re.Match[str]) -> str:
        command = match[1]
        if "--database-url" in command or not _takes_database_url(root, command.split()[1:]):
            return match[0]
        return f"`{command} --database-url {shlex.quote(url)}`"

    return _SUGGESTED_COMMAND.sub(add, text)


def _takes_database_url(command: click.Command, words: list[str]) -> bool:
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
    # demo's --database-url is its own (never the archive's): only the shared option counts.
    return any(isinstance(p, click.Option) and p.envvar == DATABASE_URL_ENVVAR for p in command.params)


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


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people (aligned, sizes like 1.5 GiB); csv, json or jsonl for programs (raw numbers).",
)


def duration(value: str, option: str) -> timedelta:
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
        callback=lambda _ctx, _param, value: None if value is None else duration(value, name),
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


QUERY_TIMEOUT = "60s"  # `archiver query --timeout`: a BI question, not a batch job

timeout_option = click.option(
    "--timeout",
    default=QUERY_TIMEOUT,
    show_default=True,
    metavar="DURATION",
    callback=lambda _ctx, _param, value: _query_timeout(value),
    help="Stop the statement when it has run this long in the database (30s, 5m, 1h; 0 or none: no limit). "
    "Exit status 124.",
)

as_of_option = click.option(
    "--as-of",
    metavar="WHEN",
    callback=lambda _ctx, _param, value: None if value is None else _instant(value, "--as-of"),
    help="Read the archive as it stood then: every table and view means its state at that instant "
    "(ISO 8601 such as 2026-11-20T03:00:00Z, or a date: UTC midnight).",
)


def _instant(text: str, option: str) -> datetime:
    from archiver import reports  # with the query modules, which a sync does not load

    return reports.parse_instant(text, option)


def configure_logging_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Set up logging from -v, -q and --log-format, whichever of them comes last."""
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
        callback=configure_logging_option,
        help="-v: a line per project and job on stderr; -vv: debug, with every request.",
    )(command)
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        expose_value=False,
        callback=configure_logging_option,
        is_eager=True,
        help="Text (log lines stamped in UTC), or JSON: every line written, stdout and stderr, one JSON object.",
    )(command)
