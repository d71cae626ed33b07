"""Logging fit for cron: quiet by default, a line per job with -v, every request with -vv, JSON on request.

Log lines go to stderr, stamped with the time in UTC (ISO 8601), secrets masked (`archiver.redaction`). `say` writes what a command
reports itself (its summary, its errors) in the chosen format too, so that with
`--log-format json` every line a command writes, on stdout or stderr, is one JSON object.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from archiver import redaction

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Libraries whose warnings would otherwise reach stderr unformatted, through logging's last resort.
_LIBRARIES = ("httpx", "httpcore", "alembic", "sqlalchemy", "py.warnings")
# Libraries whose warnings are about their own cleanup, after the archiver has already reported what
# went wrong (psycopg's "error ignored terminating <Copy>" when a run stops mid-COPY): shown at -vv only.
_CLEANUP_NOISE = ("psycopg",)


class _Settings:
    log_format = "text"


_settings = _Settings()


def timestamp(created: float) -> str:
    """A log record's time as ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


# The event of a record that names none (a library's warning, a line of prose): shippers route on `event`.
DEFAULT_EVENT = "log"


class JsonFormatter(logging.Formatter):
    """One JSON object per event, with any `extra=` fields beside the message."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": DEFAULT_EVENT,
            "message": record.getMessage(),
        }
        event.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            event["error"] = record.exc_info[0].__name__
        return json.dumps(event, default=str)


class TextFormatter(logging.Formatter):
    """`2026-06-02T02:15:07.123+00:00 WARNING message`: a cron log read days later needs the time."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{timestamp(record.created)} {record.levelname} {record.getMessage()}"


def configure_logging(verbose: int = 0, log_format: str = "text", *, quiet: bool = False) -> None:
    """Send logs to stderr: warnings by default, errors only when quiet, -v info, -vv debug."""
    if quiet:
        level = logging.ERROR
    else:
        level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    _settings.log_format = log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(redaction.RedactingFilter())
    handler.archiver = True  # type: ignore[attr-defined]
    logger = logging.getLogger("archiver")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    # -vv logs each request itself (archiver.client); httpx's own lines would repeat them as prose.
    noise = logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL
    for name in (*_LIBRARIES, *_CLEANUP_NOISE):
        library = logging.getLogger(name)
        library.handlers[:] = [handler]
        library.setLevel(noise if name in _CLEANUP_NOISE else max(level, logging.WARNING))
        library.propagate = False
    # Any other library's record, in the archiver's format rather than bare through logging's last resort.
    # (Only the archiver's own handler is replaced there: an embedding program's stay.)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "archiver", False)] + [handler]
    logging.captureWarnings(True)


def json_output() -> bool:
    """Whether the command writes JSON lines (--log-format json)."""
    return _settings.log_format == "json"


def asks_for_json(args: list[str]) -> bool:
    """Whether a command line asks for JSON output, read before Click parses it (a usage error stops that)."""
    pairs = itertools.pairwise([*args, ""])
    return any(arg == "--log-format=json" or (arg, value) == ("--log-format", "json") for arg, value in pairs)


def say(
    message: str, *, err: bool = False, level: str = "info", event: str = "message", **fields: Any
) -> None:
    """Write one line a command reports: the message as it is, or one JSON object holding `fields` too."""
    stream = sys.stderr if err else sys.stdout
    if json_output():
        record = {"time": timestamp(datetime.now(UTC).timestamp()), "level": level, "logger": "archiver"}
        line = json.dumps({**record, "event": event, "message": message, **fields}, default=str)
    else:
        line = message
    stream.write(redaction.redact(line) + "\n")
    stream.flush()
