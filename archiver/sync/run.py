"""Run a sync: hold the lock, record the run, plan, read and write, and record how it ended."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import clock as clocks
from archiver import (
    db,
    durations,
    facts,
    ledger,
    migrate,
    normalize,
    redaction,
    responses,
    stopping,
    store,
    upkeep,
)
from archiver.client import DEFAULT_MAX_RESPONSE_MB, BasetenClient, RetryPolicy
from archiver.db import describe_db_error
from archiver.errors import ApiUnavailable, ArchiverError, FatalError, Interrupted
from archiver.lock import sync_lock
from archiver.sync.checkpoints import CheckpointStep
from archiver.sync.context import Context
from archiver.sync.fetching import Fetched, fetch
from archiver.sync.judge import Heard, judge, look_back
from archiver.sync.listings import ListingStep
from archiver.sync.plan import Planner
from archiver.sync.report import LIMIT, Failure, SyncOptions, SyncReport, utc_now

log = logging.getLogger("archiver.sync")


class Sync:
    """One run of the archiver over a scope."""

    def __init__(
        self,
        engine: Engine,
        client: BasetenClient,
        options: SyncOptions,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.client = client
        self.options = options
        self._clock = clock
        # The project listing, read first to check the clock, and what stopped it.
        self._first: Fetched[normalize.ProjectListing] | None = None
        self._first_error: FatalError | None = None
        # The facts rows the checkpoint batches rewrote, and the inputs once the last was written.
        self._facts_current: facts.Current | None = None
        self.ctx = Context(
            engine,
            client,
            options,
            now=clock(),  # one timestamp for the whole run's sightings
            report=SyncReport(scoped=not options.scope.everything),
            guard=store.DeletionGuard(options.allow_mass_delete),
        )

    @property
    def report(self) -> SyncReport:
        """What the run did so far."""
        return self.ctx.report

    @property
    def now(self) -> datetime:
        """The run's timestamp."""
        return self.ctx.now

    def run(self) -> SyncReport:
        """Archive the scope; raise FatalError for what stops the run."""
        with sync_lock(self.engine) as self.ctx.lock:
            self._check_clock()
            # Under the lock: two first-ever runs must not both create the schema.
            migrate.ensure_current(self.engine, migrate=self.options.migrate)
            run_id = self.ctx.write(self._start)
            self.report.run_id = run_id
            started = time.monotonic()
            status, summary, fatal = ledger.FAILED, None, None
            try:
                with self._time_limit():
                    self._archive()
                status = self._stop_cause() or self.report.status
            except ArchiverError as exc:
                summary = redaction.redact(str(exc))
                fatal = exc if isinstance(exc, FatalError) and not isinstance(exc, Interrupted) else None
                if self.options.stop.is_set() and not isinstance(exc, Interrupted):
                    # e.g. the project listing gave up waiting to retry because a signal came.
                    raise Interrupted(f"interrupted before the run could finish ({exc})") from None
                if not isinstance(exc, ApiUnavailable) or self._stop_cause() is None:
                    raise
                # A limit stopped even the project listing: a partial run that archived nothing.
                status, summary = ledger.PARTIAL, None
            except BaseException as exc:
                summary = f"{type(exc).__name__}: the run stopped unexpectedly"
                raise
            finally:
                self.report.counts.requests = self.client.requests_made
                self.report.rate_limited = self.client.rate_limited
                if self.options.refresh_facts and not self.options.stop.is_set():
                    self._refresh_facts()  # part of the run's time: on a large archive, a good part
                    upkeep.vacuum(self.engine)  # where autovacuum does not run
                self.report.seconds = time.monotonic() - started
                self.report.interrupted = self.options.stop.is_set()
                if self.report.interrupted:
                    status = ledger.INTERRUPTED
                self._finish(run_id, status, summary, fatal)
                if self.options.on_finish is not None:
                    self.options.on_finish(self.report)
        return self.report

    def _check_clock(self) -> None:
        """Refuse to run, before writing anything, when the API's clock says the machine's is wrong.

        The project listing is the first request: a full run goes on with it, a scoped one keeps it.
        """
        limit = self.options.max_clock_skew
        if limit is None:
            return
        try:
            self._first = fetch(self.client.list_projects, normalize.project_listing)
        except FatalError as exc:  # the key refused: raised once the run has recorded itself
            self._first_error = exc
        server = self.client.server_date
        if server is None:
            log.info("the API's answer had no Date header: the machine clock could not be checked")
            return
        clocks.check_skew(self._clock(), server, limit)

    @contextmanager
    def _time_limit(self) -> Iterator[None]:
        """Stop the run once it has gone on for --max-run-time."""
        limit = self.options.max_run_time
        if limit is None:
            yield
            return
        reason = (
            f"the run went on for longer than {durations.describe(limit.total_seconds())} (--max-run-time)"
        )
        timer = threading.Timer(limit.total_seconds(), self.client.stop, args=(reason,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _stop_cause(self) -> str | None:
        """PARTIAL when a limit stopped the run early (not a signal): its cause becomes a failure."""
        cause = self.client.stop_reason
        if cause is None or self.options.stop.is_set():
            return None
        self.report.stopped_by = cause
        log.error("stopped early: %s", cause, extra={"event": LIMIT})
        self.report.failures.append(Failure(None, None, LIMIT, cause))
        self.report.counts.jobs_failed = len(self.report.failures)
        return ledger.PARTIAL

    def _stopping(self) -> bool:
        """Whether the run is stopping: a signal came, or a limit was reached."""
        return self.options.stop.is_set() or self.client.stopping

    def _start(self, connection: sa.Connection) -> int:
        # A version's period runs from one run's start to a later one's: run times must increase,
        # whatever the clock did since the last run.
        latest = ledger.latest_start(connection)
        if latest is not None and self.now <= latest:
            if latest - self.now > clocks.DEFAULT_MAX_CLOCK_SKEW:
                log.warning(
                    "a run of this archive started at %s, after this machine's clock (%s): this run is stamped "
                    "after it, so that stamps never go backwards (`archiver check` names such a run)",
                    latest.isoformat(timespec="seconds"),
                    self.now.isoformat(timespec="seconds"),
                )
            self.ctx.now = latest + timedelta(microseconds=1)
        dead = ledger.close_dead_runs(connection, self.now, alive=self.ctx.lock.live_runs(connection))
        if dead:
            log.warning("%d earlier run(s) never finished (killed or crashed); recorded them as failed", dead)
        options = self.options
        run_id = ledger.start_run(
            connection, self.now, options.scope.as_json(), options.full, options.recorded()
        )
        if self._first is not None and self._first.kept is not None and not options.scope.everything:
            responses.keep(connection, run_id, [self._first.kept])  # read only to check the clock
        self.ctx.lock.hold_run(run_id)
        return run_id

    def _finish(self, run_id: int, status: str, summary: str | None, fatal: FatalError | None) -> None:
        report = self.report
        failures = [(f, f.kind) for f in report.failures] + [(f, "gone") for f in report.gone]
        if fatal is not None and summary is not None:  # what ended the run is one of its errors too
            failures.append((Failure(None, None, fatal.kind, summary), fatal.kind))
        errors = [
            {
                "project_id": f.project_id,
                "job_id": f.job_id,
                "kind": kind,
                "message": f.message[:2000],
                "occurred_at": self.now,
            }
            for f, kind in failures
        ]
        if summary is None and report.failures:
            summary = f"{len(report.failures)} failed: " + "; ".join(str(f) for f in report.failures[:3])
        try:
            ledger.finish_run(
                self.engine,
                run_id,
                status=status,
                # never before the run's start, however the clock moved; a replay keeps the original's
                finished_at=self.options.finished_at or max(utc_now(), self.now),
                counts=report.counts.as_dict(),
                errors=errors,
                error_summary=summary,
            )
        except sa.exc.DBAPIError as exc:
            log.error("could not record the end of run %d: %s", run_id, describe_db_error(exc))

    def _refresh_facts(self) -> None:
        """Bring the facts tables up to what the run committed; a stopped run leaves it to the next."""
        try:
            with self.engine.begin() as connection:
                analyzed = self.ctx.ahead.fresh(self.ctx.changed_checkpoints())
                facts.refresh(connection, keep_unchanged=True, current=self._facts_current, analyzed=analyzed)
        except sa.exc.DBAPIError as exc:
            log.error(
                "could not refresh the facts tables; they hold what the previous sync left: %s",
                describe_db_error(exc),
            )

    def _archive(self) -> None:
        """Plan, read the listings, then the checkpoints, then judge what vanished."""
        heard = Heard()
        targets = Planner(self.ctx, self._first, self._first_error, heard).targets()
        pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="fetch")
        try:
            jobs = ListingStep(self.ctx, heard).archive_listings(pool, targets)
            CheckpointStep(self.ctx, heard).archive_checkpoints(pool, jobs)
        finally:
            # A stopping run does not wait for requests it has left (see `bounded`).
            pool.shutdown(wait=not self.ctx.stopping(), cancel_futures=True)
        if self.ctx.facts_fresh:  # what judging writes next (deletions, instance types) makes them stale
            try:
                with self.engine.connect() as connection:
                    inputs = facts.Inputs.of(connection)
                self._facts_current = facts.Current(frozenset(self.ctx.facts_fresh), inputs)
            except sa.exc.DBAPIError:  # then the refresh at the end rewrites them too
                log.debug("could not read the facts tables' inputs after the last batch", exc_info=True)
        if not self.ctx.stopping():  # a run cut short has not heard every listing: it marks nothing
            judge(self.ctx, heard)
            look_back(self.ctx)


def run_sync(
    engine: Engine,
    client: BasetenClient,
    options: SyncOptions | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> SyncReport:
    """Run one sync and return its report."""
    return Sync(engine, client, options or SyncOptions(), clock).run()


@dataclass(frozen=True)
class ApiSettings:
    """How to reach the Baseten API: key, base URL, pacing, retries and the limits on a run's requests."""

    key: str
    url: str
    max_rps: float
    concurrency: int
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_response_mb: int = DEFAULT_MAX_RESPONSE_MB
    max_rate_limited: timedelta | None = None  # the run's total wait on 429s before it stops early

    def client(self) -> BasetenClient:
        """A client configured from these settings."""
        budget = self.max_rate_limited
        return BasetenClient(
            self.key,
            self.url,
            max_rps=self.max_rps,
            concurrency=self.concurrency,
            retry=self.retry,
            max_response_mb=self.max_response_mb,
            max_rate_limited_s=None if budget is None else budget.total_seconds(),
        )


def sync_archive(database_url: str, api: ApiSettings, options: SyncOptions) -> SyncReport:
    """Run one sync as the command line does: check the database, take signals, archive, close.

    The database is checked before any API traffic. SIGINT or SIGTERM stop the run cleanly (it
    commits what is complete and records itself as interrupted); a second signal stops it at once.
    """
    engine = db.make_engine(database_url)
    try:
        db.check_connection(engine)
        with api.client() as client, stopping.during_run(_stop_on_signal(options.stop, client)):
            try:
                return run_sync(engine, client, options)
            except KeyboardInterrupt:  # a second signal: the run has recorded itself as interrupted
                raise Interrupted(
                    "stopped at once by a second signal; what was complete is committed, rerun to finish"
                ) from None
    finally:
        engine.dispose()


def _stop_on_signal(stop: threading.Event, client: BasetenClient) -> Callable[[str], None]:
    """On SIGINT or SIGTERM, stop fetching; the run commits what is complete and says so."""

    def on_signal(name: str) -> None:
        if stop.is_set():  # a second signal: stop now
            raise KeyboardInterrupt
        log.warning("received %s: finishing what is complete, then stopping", name)
        stop.set()
        client.stop()

    return on_signal
