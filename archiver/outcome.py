"""How a sync ended, whatever the ending: the one record the summary, the JSON summary event and
the metrics file are all written from.

A run that finished has its report; a fatal one has its error, and the report of what it did
before it stopped (empty when it never started: the lock was taken, the database was down).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from archiver import ledger
from archiver.errors import ArchiverError, Interrupted, SyncInProgress
from archiver.sync import SyncReport

ALREADY_RUNNING = "already_running"  # another sync held the database: this one did nothing
# Every way a sync command can end, as the summary event and the metrics file name it.
STATUSES = (ledger.SUCCEEDED, ledger.PARTIAL, ledger.INTERRUPTED, ledger.FAILED, ALREADY_RUNNING)


@dataclass
class Outcome:
    """A sync command's ending: status, exit code, when, how long, what it did, and the error if fatal."""

    status: str
    exit_code: int
    report: SyncReport
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: float = 0.0
    error: ArchiverError | None = None

    @property
    def message(self) -> str:
        """The summary paragraph, or the error that ended the run."""
        return self.report.summary() if self.error is None else str(self.error)

    def fields(self) -> dict[str, Any]:
        """Every counter of the run, its failures, status and exit code: the summary event's fields."""
        report = self.report
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "run_id": report.run_id,
            "scoped": report.scoped,
            **report.counts.as_dict(),
            "rate_limited": report.rate_limited,
            "stopped_by": report.stopped_by,
            "failures": [asdict(failure) for failure in report.failures],
            "gone": [asdict(failure) for failure in report.gone],
            "outage": report.outage,
            "draining": [drain.as_json() for drain in report.draining],
            "seconds": round(self.seconds, 3),
            "finished_at": self.finished_at.isoformat(),
            "error": None if self.error is None else type(self.error).__name__,
        }


def of_report(report: SyncReport, seconds: float) -> Outcome:
    """The outcome of a run that finished (every job done, some failed, or stopped by a signal)."""
    return Outcome(report.status, report.exit_code, report, seconds=seconds)


def of_error(error: ArchiverError, report: SyncReport, seconds: float) -> Outcome:
    """The outcome of a run a fatal error ended, or that never began."""
    if isinstance(error, SyncInProgress):
        status = ALREADY_RUNNING
    elif isinstance(error, Interrupted):
        status = ledger.INTERRUPTED
    else:
        status = ledger.FAILED
    return Outcome(status, error.exit_code, report, seconds=seconds, error=error)


class Recorder:
    """Run a sync and return its Outcome, however it ends; pass `finished` as SyncOptions.on_finish."""

    def __init__(self) -> None:
        self._report: SyncReport | None = None

    def finished(self, report: SyncReport) -> None:
        """Keep the report of a run that recorded its end, fatal ends included."""
        self._report = report

    def run(self, sync: Callable[[], SyncReport]) -> Outcome:
        """Call `sync`; an ArchiverError becomes the outcome instead of propagating."""
        started = time.monotonic()
        try:
            report = sync()
        except ArchiverError as exc:
            return of_error(exc, self._report or SyncReport(), time.monotonic() - started)
        return of_report(report, time.monotonic() - started)
