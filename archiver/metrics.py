"""The Prometheus textfile a sync leaves behind (`--metrics-file`), for node_exporter's textfile collector.

Written after every run, whatever its ending (succeeded, partial, interrupted, failed, already
running), into a temporary file in the same directory that is then renamed over the old one, so
the collector never reads half a file. Names follow Prometheus' guide: `_seconds` and
`_timestamp_seconds` in base units, `_total` only for counters, outcomes as labels.

The `_total` counters add each run to the previous file's values, so `increase(...[1d])` works
across runs; `archiver_last_run_*` says what the last run alone did. Only a full run (no --project
or --job) that succeeded sets `archiver_last_success_timestamp_seconds`; after any other run it is
carried over from the previous file, or read from the archive's run ledger; 0 means no success is
known, which any freshness alert catches.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import datetime
from pathlib import Path

from archiver import ledger
from archiver.errors import DatabaseUnavailable
from archiver.outcome import STATUSES, Outcome

log = logging.getLogger("archiver.metrics")

CHECKPOINT_OUTCOMES = ("inserted", "updated", "unchanged", "deleted")
LAST_SUCCESS = "archiver_last_success_timestamp_seconds"
# node_exporter runs as its own user: the file must be readable by others, unlike mkstemp's 0600.
FILE_MODE = 0o644

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)")

Samples = dict[str, float]


def missing_directory(path: Path) -> str | None:
    """Say why `path` cannot take the metrics (its directory is missing), before the run; None if it can."""
    if not path.parent.is_dir():
        return f"no directory {path.parent} to write {path.name} in"
    return None


def write(path: Path, ended: Outcome, database_url: str) -> str | None:
    """Replace `path` with the metrics of the run that `ended`; a failure to write is logged and returned."""

    def known_success() -> datetime | None:
        # Asked only when neither this run nor the previous file knows; not of a database just found down.
        return None if isinstance(ended.error, DatabaseUnavailable) else ledger.last_success_in(database_url)

    if problem := _not_a_regular_file(path):
        said = f"could not write the metrics file {path}: {problem}"
        log.error("%s", said, extra={"event": "metrics"})
        return said
    try:
        previous = read(path)
        _replace(path, render(ended, previous, known_success))
    except OSError as exc:
        said = f"could not write the metrics file {path}: {exc.strerror or exc}"
        log.error("%s", said, extra={"event": "metrics"})
        return said
    return None


def _not_a_regular_file(path: Path) -> str | None:
    """Why `path` must not be replaced (a device, a FIFO, a directory is someone else's); None if it may."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISREG(mode):
        return None
    return "it is not a regular file (a device, FIFO or directory is left as it is): choose another path"


def read(path: Path) -> Samples:
    """The samples of an earlier metrics file by series (`name{labels}`); none if it is missing or unreadable."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    samples: Samples = {}
    for line in text.splitlines():
        if (match := _SAMPLE.match(line)) is None:
            continue
        with suppress(ValueError):
            value = float(match[2])
            if math.isfinite(value):  # a NaN or infinity carried forward would poison every later file
                samples[match[1]] = value
    return samples


def render(ended: Outcome, previous: Samples, known_success: Callable[[], datetime | None]) -> str:
    """The metrics file for the run that `ended`, in the Prometheus text format."""
    return "".join(_families(ended, previous, known_success))


def _families(
    ended: Outcome, previous: Samples, known_success: Callable[[], datetime | None]
) -> Iterator[str]:
    report, counts = ended.report, ended.report.counts
    finished = ended.finished_at.timestamp()
    written = dict(
        zip(
            CHECKPOINT_OUTCOMES,
            (
                counts.checkpoints_inserted,
                counts.checkpoints_updated,
                counts.checkpoints_unchanged,
                counts.checkpoints_deleted,
            ),
            strict=True,
        )
    )

    def total(series: str, value: int) -> float:
        return previous.get(series, 0.0) + value

    yield from _family(
        "archiver_last_run_timestamp_seconds",
        "gauge",
        "When the last sync run ended, in Unix time.",
        {"": finished},
    )
    yield from _family(
        LAST_SUCCESS,
        "gauge",
        "When a full sync run (no --project or --job) last succeeded, in Unix time (0: none known).",
        {
            "": finished
            if ended.status == ledger.SUCCEEDED and not ended.report.scoped
            else _last_success(previous, known_success)
        },
    )
    yield from _family(
        "archiver_last_run_duration_seconds",
        "gauge",
        "How long the last sync run took, from start to end.",
        {"": round(ended.seconds, 3)},
    )
    yield from _family(
        "archiver_last_run_status",
        "gauge",
        "How the last sync run ended: 1 for its status, 0 for the others.",
        {f'{{status="{status}"}}': int(status == ended.status) for status in STATUSES},
    )
    yield from _family(
        "archiver_last_run_exit_code",
        "gauge",
        "The exit status of the last sync run (0 succeeded, 3 partial, 75 already running; README.md).",
        {"": ended.exit_code},
    )
    yield from _family(
        "archiver_jobs_failed",
        "gauge",
        "Projects and jobs the last sync run could not archive.",
        {"": len(report.failures)},
    )
    yield from _family(
        "archiver_last_run_checkpoints",
        "gauge",
        "Checkpoints the last sync run found, by what it did with them (deleted: marked deleted).",
        {f'{{outcome="{outcome}"}}': value for outcome, value in written.items()},
    )
    yield from _family(
        "archiver_checkpoints_total",
        "counter",
        "Checkpoints sync runs found, by what they did with them, added up over the runs this file recorded.",
        {
            f'{{outcome="{outcome}"}}': total(f'archiver_checkpoints_total{{outcome="{outcome}"}}', value)
            for outcome, value in written.items()
        },
    )
    yield from _family(
        "archiver_requests_total",
        "counter",
        "Requests sync runs made to the Baseten API, retries included.",
        {"": total("archiver_requests_total", counts.requests)},
    )
    yield from _family(
        "archiver_rate_limited_total",
        "counter",
        "Requests the Baseten API answered with 429 (rate limited).",
        {"": total("archiver_rate_limited_total", report.rate_limited)},
    )


def _family(name: str, kind: str, help_text: str, samples: dict[str, float]) -> Iterator[str]:
    yield f"# HELP {name} {help_text}\n"
    yield f"# TYPE {name} {kind}\n"
    for labels, value in samples.items():
        yield f"{name}{labels} {_number(value)}\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _last_success(previous: Samples, known_success: Callable[[], datetime | None]) -> float:
    if LAST_SUCCESS in previous:
        return previous[LAST_SUCCESS]
    success = known_success()
    return 0.0 if success is None else success.timestamp()


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` atomically: a temporary file beside it (not *.prom), then a rename."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
