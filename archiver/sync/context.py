"""What every step of a run shares: its clock, report and client, and the one way it writes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, ledger, quarantine, redaction, responses, store, upkeep
from archiver.client import BasetenClient
from archiver.db import describe_db_error
from archiver.errors import Abandoned, DatabaseUnavailable, JobError, NotFound, Unstorable
from archiver.lock import SyncLock
from archiver.normalize import JobRecord, Listing
from archiver.responses import Kept
from archiver.sync.report import Failure, SyncOptions, SyncReport

log = logging.getLogger("archiver.sync")

T = TypeVar("T")
P = ParamSpec("P")


@dataclass
class Context:
    """A run's shared state: one timestamp for all its sightings, its report, and its transactions."""

    engine: Engine
    client: BasetenClient
    options: SyncOptions
    now: datetime
    report: SyncReport
    guard: store.DeletionGuard
    lock: SyncLock = field(default_factory=SyncLock)
    jobs_done: int = 0
    # The jobs this run's job listings described, for checkpoint listings that carry none.
    listed_jobs: dict[str, JobRecord] = field(default_factory=dict)
    # Jobs whose rows of the steady facts tables were rewritten in the transaction that wrote them.
    facts_fresh: set[str] = field(default_factory=set)
    # The large tables' statistics, gathered while the last jobs are written (PostgreSQL).
    ahead: upkeep.AnalysisAhead = field(init=False)

    def __post_init__(self) -> None:
        self.ahead = upkeep.AnalysisAhead(self.engine)

    def changed_checkpoints(self) -> int:
        """The checkpoint rows the run inserted, updated or marked deleted so far."""
        counts = self.report.counts
        return counts.checkpoints_inserted + counts.checkpoints_updated + counts.checkpoints_deleted

    def stopping(self) -> bool:
        """Whether the run is stopping: a signal came, or a limit was reached."""
        return self.options.stop.is_set() or self.client.stopping

    def keep(self, connection: sa.Connection, *kept: Kept | None) -> None:
        """Store the responses this work acted on, in its transaction (see `archiver.responses`)."""
        if self.report.run_id is not None:
            responses.keep(connection, self.report.run_id, [k for k in kept if k is not None])

    def record_progress(self, connection: sa.Connection) -> None:
        """Record the run's counts so far."""
        # In the same transaction as the work it counts: a killed run's row stays truthful.
        if self.report.run_id is not None:
            self.report.counts.requests = self.client.requests_made
            ledger.record_progress(connection, self.report.run_id, self.report.counts.as_dict())

    def progress(self, done: int) -> None:
        """Tell the progress display that `done` more jobs are done, and how many checkpoints are."""
        self.jobs_done += done
        if self.options.progress is not None:
            counts = self.report.counts
            checkpoints = (
                counts.checkpoints_inserted + counts.checkpoints_updated + counts.checkpoints_unchanged
            )
            self.options.progress(self.jobs_done, counts.jobs, checkpoints)

    def write(self, work: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `work` in one transaction, committed only while the sync lock holds; a database failure ends the run."""
        try:
            return self.attempt(work, *args, **kwargs)
        except Unstorable as exc:
            raise write_failed(exc.message) from None

    def attempt(
        self, work: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `work` in one transaction; raise Unstorable if the database refuses it but takes other writes.

        Then what `work` writes is at fault, not the database, and only its project or job need
        fail. A database that takes no write at all (gone, read-only) ends the run.
        """
        before = self.report.snapshot()
        # StatementError: a value SQLAlchemy could not bind; RecursionError: one too deep to serialize.
        refusals: tuple[type[BaseException], ...] = (sa.exc.StatementError, RecursionError)
        try:
            with self.engine.begin() as connection:
                done = work(connection, *args, **kwargs)
                self.lock.verify(connection)
                return done
        except (*db.database_errors(self.engine), *refusals) as exc:
            self.report.restore(before)
            problem = describe_db_error(exc)
        if self._takes_writes():
            raise Unstorable(f"the database refused its rows ({problem})")
        raise write_failed(problem)

    def _takes_writes(self) -> bool:
        """Whether the database still takes a write: the run's own progress, in a transaction of its own."""
        if self.report.run_id is None:
            return False
        try:
            with self.engine.begin() as connection:
                self.record_progress(connection)
        except db.database_errors(self.engine):
            return False
        return True

    def fail_listing(
        self, listing: Listing, *, project_id: str | None = None, job_id: str | None = None
    ) -> None:
        """Fail each entry a listing quarantined, and the listing's unit if the response said there is more."""
        for exc in listing.errors:
            self.fail(exc.located(project_id=project_id, job_id=job_id))

    def keep_listings(self, connection: sa.Connection, *answers: tuple[Kept | None, Listing]) -> None:
        """Keep listings' responses (one write for all) and the entries they quarantined, in the transaction of their work."""
        self.keep(connection, *(kept for kept, _ in answers))
        if self.report.run_id is None:
            return
        for kept, listing in answers:
            if listing.rejected:
                endpoint = (
                    f"{kept.response.method} {kept.response.path}" if kept is not None else "(not kept)"
                )
                quarantine.keep(connection, self.report.run_id, endpoint, listing.rejected, self.now)

    def fail(self, exc: JobError) -> None:
        """Record that a project or job could not be archived (or, for a 404, is gone)."""
        if isinstance(exc, Abandoned):  # the run is stopping: not done, not failed; the next run does it
            return
        failure = Failure(exc.project_id, exc.job_id, exc.kind, redaction.redact(exc.message))
        fields = {"event": failure.kind, "project_id": failure.project_id, "job_id": failure.job_id}
        if isinstance(exc, NotFound):
            self.report.gone.append(failure)
            log.warning("%s", failure, extra=fields)
        else:
            self.report.failures.append(failure)
            self.report.counts.jobs_failed = len(self.report.failures)
            log.error("%s", failure, extra=fields)


def write_failed(problem: str) -> DatabaseUnavailable:
    """The error that ends a run whose database takes no more writes."""
    return DatabaseUnavailable(
        f"writing to the database failed: {problem}; "
        "everything committed before this point is intact, rerun to finish"
    )
