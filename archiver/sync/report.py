"""What a run is asked to do (scope, options) and what it did (its report)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from archiver import clock as clocks
from archiver import ledger, versioning
from archiver.drain import DEFAULT_DRAIN_WINDOW, Drain
from archiver.errors import JobError
from archiver.schema import RunCounts

DEFAULT_RECHECK_AFTER = timedelta(days=7)
# Rows per write transaction (whole jobs): fewer, larger transactions halve PostgreSQL's per-row cost.
DEFAULT_BATCH_ROWS = 10_000
LIMIT = "limit"  # sync_errors.kind of a run stopped by --max-run-time or --max-rate-limited-time


def utc_now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Scope:
    """What a run covers: everything, or only some projects and jobs."""

    project_ids: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not (self.project_ids or self.job_ids)

    def as_json(self) -> dict[str, list[str]] | None:
        """The scope as stored in `sync_runs.scope` (null: the whole organisation)."""
        return None if self.everything else {"projects": list(self.project_ids), "jobs": list(self.job_ids)}


@dataclass
class SyncOptions:
    """How to run a sync."""

    scope: Scope = field(default_factory=Scope)
    full: bool = False
    allow_mass_delete: bool = False  # accept, this once, a listing that marks a mass of rows deleted
    drain_window: timedelta = (
        DEFAULT_DRAIN_WINDOW  # warn of a scope that lost most of its checkpoints within it
    )
    recheck_after: timedelta | None = DEFAULT_RECHECK_AFTER  # re-read a skippable job at least this often
    concurrency: int = 8
    batch_rows: int = DEFAULT_BATCH_ROWS
    migrate: bool = False  # upgrade an out-of-date schema instead of refusing to run
    max_run_time: timedelta | None = None  # past this, the run stops early (partial)
    max_clock_skew: timedelta | None = clocks.DEFAULT_MAX_CLOCK_SKEW  # None: the clock is not checked
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[int, int, int], None] | None = (
        None  # (jobs done, jobs known so far, checkpoints done)
    )
    on_finish: Callable[[SyncReport], None] | None = None  # told the report once the run has recorded its end
    finished_at: datetime | None = None  # the end to record (a rebuild's replay of a run); None: when it ends
    refresh_facts: bool = True  # rewrite the facts tables BI tools read once the run is done

    def recorded(self) -> dict[str, Any]:
        """What besides scope and `full` decides what a run archives, as `sync_runs.options` keeps it."""
        recheck = self.recheck_after.total_seconds() if self.recheck_after else None
        return {"allow_mass_delete": self.allow_mass_delete, "recheck_after_seconds": recheck}


@dataclass
class Failure:
    """A project or job that could not be archived this run."""

    project_id: str | None
    job_id: str | None
    kind: str
    message: str

    def __str__(self) -> str:
        return str(JobError(self.message, project_id=self.project_id, job_id=self.job_id))


@dataclass
class SyncReport:
    """What a run did."""

    run_id: int | None = None
    counts: RunCounts = field(default_factory=RunCounts)
    gone: list[Failure] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    rate_limited: int = 0  # requests the API answered with 429
    seconds: float = 0.0
    interrupted: bool = False
    stopped_by: str | None = None  # the limit that ended the run early, when one did
    scoped: bool = False  # only some projects or jobs (--project, --job): says nothing of the rest
    outage: bool = False  # most listings answered 404: nothing was marked deleted
    draining: list[Drain] = field(default_factory=list)  # scopes that lost most of their checkpoints lately

    @property
    def exit_code(self) -> int:
        """0 when everything was archived, 3 when some jobs failed, 130 when interrupted."""
        return 130 if self.interrupted else 3 if self.failures else 0

    @property
    def status(self) -> str:
        """How the run ended, as `sync_runs.status` says it."""
        return (
            ledger.INTERRUPTED if self.interrupted else ledger.PARTIAL if self.failures else ledger.SUCCEEDED
        )

    def snapshot(self) -> tuple[RunCounts, int, int]:
        """What the report holds now, for `restore` when the work it counts is rolled back."""
        return replace(self.counts), len(self.failures), len(self.gone)

    def restore(self, snapshot: tuple[RunCounts, int, int]) -> None:
        """Forget what was counted since `snapshot`."""
        self.counts, failures, gone = replace(snapshot[0]), snapshot[1], snapshot[2]
        del self.failures[failures:], self.gone[gone:]

    def add_writes(self, writes: versioning.WriteCounts) -> None:
        """Count what a write did to the checkpoints table."""
        self.counts.checkpoints_inserted += writes.inserted
        self.counts.checkpoints_updated += writes.updated
        self.counts.checkpoints_unchanged += writes.unchanged
        self.counts.checkpoints_deleted += writes.deleted

    def summary(self) -> str:
        """One paragraph for people and cron mail."""
        c = self.counts
        text = (
            f"Archived {c.projects} projects and {c.jobs} jobs "
            f"({c.jobs_fetched} fetched, {c.jobs_skipped} skipped as unchanged): "
            f"checkpoints {c.checkpoints_inserted} inserted, {c.checkpoints_updated} updated, "
            f"{c.checkpoints_unchanged} unchanged, {c.checkpoints_deleted} marked deleted; "
            f"{len(self.failures)} failed"
        )
        if self.gone:
            text += f", {len(self.gone)} gone (404)"
        text += f"; {c.requests} requests in {self.seconds:.1f}s."
        if self.draining:
            text += f" Draining: {len(self.draining)} jobs or projects lost most of their checkpoints lately."
        if self.outage:
            text += " Most listings answered 404: taken for an outage, nothing was marked deleted."
        if (cause := self.stopped_by) is not None:
            text += f" Stopped early: {cause}; what is complete was committed, rerun to finish."
        elif self.interrupted:
            text += " Interrupted before the end: what is complete was committed; rerun to finish."
        return text
