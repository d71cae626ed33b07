"""Orchestrate a sync: discover projects and jobs, fetch checkpoints concurrently, normalize,
and write whole jobs, one transaction per batch of jobs, from a single writer.

A run holds the database's sync lock, records itself in `sync_runs`, skips jobs whose
checkpoints cannot have changed (unless `full`), and marks what the API stopped listing
as deleted, but only where it read a complete listing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import clock as clocks
from archiver import db, durations, ledger, migrate, normalize, redaction, responses, stopping, store
from archiver.client import DEFAULT_MAX_RESPONSE_MB, ApiResponse, BasetenClient, RetryPolicy, unreachable
from archiver.db import describe_db_error
from archiver.errors import (
    Abandoned,
    ApiUnavailable,
    ArchiverError,
    AuthError,
    DatabaseUnavailable,
    FatalError,
    Interrupted,
    JobError,
    MalformedResponse,
    NotFound,
    SuspectListing,
    Unstorable,
)
from archiver.lock import SyncLock, sync_lock
from archiver.normalize import CheckpointListing, JobListing
from archiver.responses import Kept
from archiver.schema import RunCounts

log = logging.getLogger("archiver.sync")

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

DEFAULT_RECHECK_AFTER = timedelta(days=7)
# Rows per write transaction (whole jobs): fewer, larger transactions halve PostgreSQL's per-row cost.
DEFAULT_BATCH_ROWS = 10_000
# A stopping run waits this long for requests already under way, then leaves them: a signal ends
# the process within two seconds, whatever a request is doing.
STOP_GRACE_S = 1.0
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
    recheck_after: timedelta | None = DEFAULT_RECHECK_AFTER  # re-read a skippable job at least this often
    concurrency: int = 8
    batch_rows: int = DEFAULT_BATCH_ROWS
    migrate: bool = False  # upgrade an out-of-date schema instead of refusing to run
    max_run_time: timedelta | None = None  # past this, the run stops early (partial)
    max_clock_skew: timedelta | None = clocks.DEFAULT_MAX_CLOCK_SKEW  # None: the clock is not checked
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[int, int], None] | None = None  # (jobs done, jobs known so far)
    on_finish: Callable[[SyncReport], None] | None = None  # told the report once the run has recorded its end

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

    def add_writes(self, writes: store.WriteCounts) -> None:
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
        if (cause := self.stopped_by) is not None:
            text += f" Stopped early: {cause}; what is complete was committed, rerun to finish."
        elif self.interrupted:
            text += " Interrupted before the end: what is complete was committed; rerun to finish."
        return text


def bounded(
    pool: ThreadPoolExecutor,
    fn: Callable[[T], R],
    items: Iterable[T],
    window: int,
    stop: Callable[[], bool],
) -> Iterator[tuple[T, Future[R]]]:
    """Run fn over items with at most `window` in flight; yield each as it completes.

    Once `stop()` holds, nothing more starts, and what is still running after STOP_GRACE_S is left.
    """
    pending = iter(items)
    running: dict[Future[R], T] = {}
    give_up_at: float | None = None

    def submit_next() -> None:
        if stop():
            return
        for item in pending:
            running[pool.submit(fn, item)] = item
            return

    for _ in range(window):
        submit_next()
    while running:
        if give_up_at is None and stop():
            give_up_at = time.monotonic() + STOP_GRACE_S
        if give_up_at is not None and time.monotonic() >= give_up_at:
            log.info("stopping: %d requests still under way are left unfinished", len(running))
            return
        # A bounded wait, so that a stop is noticed while every request is still running.
        done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
        for future in done:
            item = running.pop(future)
            submit_next()
            yield item, future


@dataclass(frozen=True)
class Fetched(Generic[T]):
    """The outcome of one request: its parsed value or the error, and the response to keep, if any."""

    kept: Kept | None
    value: T | None = None
    error: JobError | None = None

    def result(self) -> T:
        """The parsed value, or raise the request's error."""
        if self.error is not None:
            raise self.error
        return cast(T, self.value)


def fetch(request: Callable[[], ApiResponse], parse: Callable[[Any, str], T]) -> Fetched[T]:
    """Make a request and parse its answer and `Link` header, keeping the response whatever the parse makes of it.

    A 404 keeps its body too: the archive acts on it. Other failed requests have no answer to keep.
    """
    try:
        response = request()
    except NotFound as exc:
        return Fetched(Kept.of(exc.response) if isinstance(exc.response, ApiResponse) else None, error=exc)
    except JobError as exc:
        return Fetched(None, error=exc)
    kept = Kept.of(response)
    try:
        payload, link = response.json(), response.link
        del response  # the raw body: what is parsed from it takes its place
        return Fetched(kept, parse(payload, link))
    except JobError as exc:
        return Fetched(kept, error=exc)
    except RecursionError:  # the contract bounds depth; this is the net under it
        return Fetched(kept, error=MalformedResponse("a value is nested too deeply to read"))


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
        self.now = clock()  # one timestamp for the whole run's sightings
        self._clock = clock
        # The project listing, read first to check the clock, and what stopped it.
        self._first: Fetched[normalize.ProjectListing] | None = None
        self._first_error: FatalError | None = None
        self.report = SyncReport(scoped=not options.scope.everything)
        self.guard = store.DeletionGuard(options.allow_mass_delete)
        self._jobs_done = 0
        # The jobs this run's job listings described, for checkpoint listings that carry none.
        self._listed_jobs: dict[str, normalize.JobRecord] = {}
        self._lock = SyncLock()

    def run(self) -> SyncReport:
        """Archive the scope; raise FatalError for what stops the run."""
        with sync_lock(self.engine) as self._lock:
            self._check_clock()
            # Under the lock: two first-ever runs must not both create the schema.
            migrate.ensure_current(self.engine, migrate=self.options.migrate)
            run_id = self._write(self._start)
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
            self.now = latest + timedelta(microseconds=1)
        dead = ledger.close_dead_runs(connection, self.now, alive=self._lock.live_runs(connection))
        if dead:
            log.warning("%d earlier run(s) never finished (killed or crashed); recorded them as failed", dead)
        options = self.options
        run_id = ledger.start_run(
            connection, self.now, options.scope.as_json(), options.full, options.recorded()
        )
        if self._first is not None and self._first.kept is not None and not options.scope.everything:
            responses.keep(connection, run_id, [self._first.kept])  # read only to check the clock
        self._lock.hold_run(run_id)
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
                finished_at=max(utc_now(), self.now),  # never before the run's start, however the clock moved
                counts=report.counts.as_dict(),
                errors=errors,
                error_summary=summary,
            )
        except sa.exc.DBAPIError as exc:
            log.error("could not record the end of run %d: %s", run_id, describe_db_error(exc))

    def _archive(self) -> None:
        targets = self._targets()
        pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="fetch")
        try:
            jobs = self._archive_listings(pool, targets)
            self._archive_checkpoints(pool, jobs)
        finally:
            # A stopping run does not wait for requests it has left (see `bounded`).
            pool.shutdown(wait=not self._stopping(), cancel_futures=True)

    def _targets(self) -> dict[str, set[str] | None]:
        """Project ids to list, each with the job ids wanted (None: all of them)."""
        scope = self.options.scope
        if self._first_error is not None:
            raise self._first_error
        if scope.everything:
            fetched = self._first or fetch(self.client.list_projects, normalize.project_listing)
            if fetched.error is not None:  # malformed too: without the listing there is no run
                self._write(self._keep, fetched.kept)
                raise unreachable(fetched.error)
            listing = fetched.result()
            self._fail_listing(listing)
            listed = {project["id"] for project in listing.projects}
            if listing.complete:
                self._write(self._mark_missing_projects, listed | listing.refused, fetched.kept, listing)
            else:
                self._write(self._keep_listing, fetched.kept, listing)
            return dict.fromkeys(listed)
        targets = dict.fromkeys(scope.project_ids)
        for job_id in scope.job_ids:
            project_id = self._project_of(job_id)
            if project_id is None:
                continue
            wanted = targets.setdefault(project_id, set())
            if wanted is not None:
                wanted.add(job_id)
        return targets

    def _mark_missing_projects(
        self, connection: sa.Connection, listed: set[str], kept: Kept | None, listing: normalize.Listing
    ) -> None:
        self._keep_listing(connection, kept, listing)
        live = store.live_projects(connection)
        missing = sorted(live - listed)
        if reason := self.guard.refuses("projects", len(live), len(missing), len(listed)):
            self._fail(SuspectListing(f"the organisation's project listing: {reason}"))
            return
        self.report.counts.checkpoints_deleted += store.mark_deleted(connection, self.now, projects=missing)

    def _project_of(self, job_id: str) -> str | None:
        """Resolve a bare job id to its project with the search endpoint."""
        fetched = fetch(
            lambda: self.client.search_jobs(job_id=job_id),
            lambda payload, link: normalize.project_of_job(payload, job_id, link),
        )
        if fetched.error is not None:
            self._write(self._keep, fetched.kept)
            self._fail(fetched.error.located(project_id=None, job_id=job_id))
            return None
        search = fetched.result()
        self._write(self._keep_listing, fetched.kept, search)
        self._fail_listing(search)
        project_id = search.project_id
        if project_id is None:
            self._fail(
                JobError("no such job in this organisation (the job search found nothing)", job_id=job_id)
            )
        return project_id

    def _archive_listings(
        self, pool: ThreadPoolExecutor, targets: dict[str, set[str] | None]
    ) -> list[tuple[str, str]]:
        """List each project's jobs and archive project and job rows; return the jobs to fetch."""
        to_fetch: list[tuple[str, str]] = []
        window = self.options.concurrency * 2
        for project_id, future in bounded(pool, self._fetch_listing, targets, window, self._stopping):
            fetched = future.result()
            if isinstance(fetched.error, NotFound) and self.options.scope.everything:
                self._fail(fetched.error.located(project_id=project_id, job_id=None))
                self._write(self._mark_gone, fetched.kept, projects=[project_id])
                continue
            if fetched.error is not None:
                self._write(self._keep, fetched.kept)
                if isinstance(fetched.error, NotFound):
                    # Asked for by name: a typo or a project outside the key's teams, not news of a deletion.
                    message = "no such project, or not visible to this API key (HTTP 404)"
                    self._fail(JobError(message, project_id=project_id))
                else:
                    self._fail(fetched.error.located(project_id=project_id, job_id=None))
                continue
            listing = fetched.result()
            wanted = targets[project_id]
            if wanted is not None:
                listing.jobs = [job for job in listing.jobs if job.row["id"] in wanted]
                # Asked for some jobs: another job's broken entry is none of this run's business.
                listing.rejected = [r for r in listing.rejected if r.entry_id is None or r.entry_id in wanted]
                for job_id in sorted(wanted - {job.row["id"] for job in listing.jobs} - listing.refused):
                    self._fail(
                        JobError(
                            "the job is not in its project's job list", project_id=project_id, job_id=job_id
                        )
                    )
            self._fail_listing(listing)
            self._listed_jobs.update((job.row["id"], job) for job in listing.jobs)
            try:
                skip = self._attempt(
                    self._save_listing, listing, wanted is None and listing.complete, fetched.kept
                )
            except Unstorable as exc:  # its jobs are not read: the next run tries the project again
                self._fail(exc.located(project_id=project_id, job_id=None))
                self._write(self._keep, fetched.kept)
                continue
            jobs = listing.jobs
            self.report.counts.projects += 1
            self.report.counts.jobs += len(jobs)
            self.report.counts.jobs_skipped += len(skip)
            self._progress(len(skip))
            to_fetch.extend((project_id, job.row["id"]) for job in jobs if job.row["id"] not in skip)
            log.info(
                "project %s: %d jobs listed, %d unchanged since their last read",
                project_id,
                len(jobs),
                len(skip),
                extra={
                    "event": "project",
                    "project_id": project_id,
                    "jobs": len(jobs),
                    "jobs_skipped": len(skip),
                },
            )
        return to_fetch

    def _save_listing(
        self, connection: sa.Connection, listing: JobListing, complete: bool, kept: Kept | None
    ) -> set[str]:
        """Write a project's listing; return the ids of jobs whose checkpoints need no read.

        Only a complete listing of the whole project says which jobs are gone.
        """
        self._keep_listing(connection, kept, listing)
        jobs = listing.jobs
        states = {} if self.options.full else store.fetch_states(connection, [job.row["id"] for job in jobs])
        recheck = self.options.recheck_after
        skip = {
            job.row["id"] for job in jobs if store.can_skip(job, states.get(job.row["id"]), self.now, recheck)
        }
        store.save_listing(connection, listing.project, jobs, self.now)
        if complete:
            project_id = listing.project["id"]
            live = store.live_jobs(connection, project_id)
            listed = {job.row["id"] for job in jobs} | listing.refused
            missing = sorted(live - listed)
            if reason := self.guard.refuses("jobs", len(live), len(missing), len(listed)):
                self._fail(SuspectListing(f"the job listing: {reason}", project_id=project_id))
            else:
                self.report.counts.checkpoints_deleted += store.mark_deleted(
                    connection, self.now, jobs=missing
                )
        self._record_progress(connection)
        return skip

    def _fetch_listing(self, project_id: str) -> Fetched[JobListing]:
        return fetch(
            lambda: self.client.list_jobs(project_id),
            lambda payload, link: normalize.job_listing(payload, project_id, link),
        )

    def _archive_checkpoints(self, pool: ThreadPoolExecutor, jobs: list[tuple[str, str]]) -> None:
        """Fetch every job's checkpoints; write whole jobs in batches."""
        batch: list[Fetched[CheckpointListing]] = []
        rows = 0
        window = self.options.concurrency * 2
        for (project_id, job_id), future in bounded(
            pool, self._fetch_checkpoints, jobs, window, self._stopping
        ):
            try:
                fetched = future.result()
            except AuthError:  # the key was refused midway (rotated?): keep what was read with it
                self._flush(batch)
                raise
            if fetched.error is not None:
                self._fail(fetched.error.located(project_id=project_id, job_id=job_id))
                if isinstance(fetched.error, NotFound):
                    self._write(self._mark_gone, fetched.kept, jobs=[job_id])
                else:
                    self._write(self._keep, fetched.kept)
                self._progress(1)
                continue
            listing = fetched.result()
            for error in listing.errors:
                self._fail(error.located(project_id=project_id, job_id=job_id))
            if listing.duplicates:
                log.warning(
                    "project %s, job %s: checkpoint ids listed twice, the later entry kept: %s",
                    project_id,
                    job_id,
                    ", ".join(sorted(set(listing.duplicates))),
                )
            batch.append(fetched)
            rows += len(listing.checkpoints) + 1
            if rows >= self.options.batch_rows:
                self._flush(batch)
                batch, rows = [], 0
        self._flush(batch)

    def _fetch_checkpoints(self, target: tuple[str, str]) -> Fetched[CheckpointListing]:
        project_id, job_id = target
        return fetch(
            lambda: self.client.get_checkpoints(project_id, job_id),
            lambda payload, link: normalize.checkpoint_listing(
                payload, project_id, job_id, link, self._listed_jobs.get(job_id)
            ),
        )

    def _mark_gone(
        self,
        connection: sa.Connection,
        kept: Kept | None,
        *,
        projects: list[str] | None = None,
        jobs: list[str] | None = None,
    ) -> None:
        """Record a 404: what was listed a moment ago is gone, with everything it held."""
        self._keep(connection, kept)
        self.report.counts.checkpoints_deleted += store.mark_deleted(
            connection, self.now, projects=projects or (), jobs=jobs or ()
        )

    def _flush(self, batch: list[Fetched[CheckpointListing]]) -> None:
        """Write a batch of whole jobs; when the database refuses it, write each job alone and fail the refused."""
        if not batch:
            return
        try:
            self._attempt(self._save_checkpoints, batch)
            saved = batch
        except Unstorable:
            saved = [fetched for fetched in batch if self._save_alone(fetched)]
        for listing in (fetched.result() for fetched in saved):
            job = listing.job.row
            log.info(
                "project %s, job %s: %d checkpoints",
                listing.project_id,
                job["id"],
                len(listing.checkpoints),
                extra={
                    "event": "job",
                    "project_id": listing.project_id,
                    "job_id": job["id"],
                    "status": job["current_status"],
                    "checkpoints": len(listing.checkpoints),
                },
            )
        self._progress(len(batch))

    def _save_alone(self, fetched: Fetched[CheckpointListing]) -> bool:
        """Write one job's checkpoints in a transaction of its own; fail the job if the database refuses them."""
        try:
            self._attempt(self._save_checkpoints, [fetched])
            return True
        except Unstorable as exc:
            listing = fetched.result()
            self._fail(exc.located(project_id=listing.project_id, job_id=listing.job.row["id"]))
            self._write(self._keep, fetched.kept)
            return False

    def _save_checkpoints(self, connection: sa.Connection, batch: list[Fetched[CheckpointListing]]) -> None:
        for fetched in batch:
            self._keep_listing(connection, fetched.kept, fetched.result())
        listings = [fetched.result() for fetched in batch]
        writes, refused = store.save_checkpoint_listings(connection, listings, self.now, self.guard)
        self.report.add_writes(writes)
        projects = {listing.job.row["id"]: listing.project_id for listing in listings}
        for job_id, reason in refused.items():
            self._fail(
                SuspectListing(
                    f"the checkpoint listing: {reason}", project_id=projects[job_id], job_id=job_id
                )
            )
        self.report.counts.jobs_fetched += len(listings)
        self._record_progress(connection)

    def _keep(self, connection: sa.Connection, *kept: Kept | None) -> None:
        """Store the responses this work acted on, in its transaction (see `archiver.responses`)."""
        if self.report.run_id is not None:
            responses.keep(connection, self.report.run_id, [k for k in kept if k is not None])

    def _record_progress(self, connection: sa.Connection) -> None:
        # In the same transaction as the work it counts: a killed run's row stays truthful.
        if self.report.run_id is not None:
            self.report.counts.requests = self.client.requests_made
            ledger.record_progress(connection, self.report.run_id, self.report.counts.as_dict())

    def _progress(self, done: int) -> None:
        self._jobs_done += done
        if self.options.progress is not None:
            self.options.progress(self._jobs_done, self.report.counts.jobs)

    def _write(
        self, work: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `work` in one transaction, committed only while the sync lock holds; a database failure ends the run."""
        try:
            return self._attempt(work, *args, **kwargs)
        except Unstorable as exc:
            raise _write_failed(exc.message) from None

    def _attempt(
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
                self._lock.verify(connection)
                return done
        except (*db.database_errors(self.engine), *refusals) as exc:
            self.report.restore(before)
            problem = describe_db_error(exc)
        if self._takes_writes():
            raise Unstorable(f"the database refused its rows ({problem})")
        raise _write_failed(problem)

    def _takes_writes(self) -> bool:
        """Whether the database still takes a write: the run's own progress, in a transaction of its own."""
        if self.report.run_id is None:
            return False
        try:
            with self.engine.begin() as connection:
                self._record_progress(connection)
        except db.database_errors(self.engine):
            return False
        return True

    def _fail_listing(self, listing: normalize.Listing) -> None:
        """Fail each entry a listing quarantined, and the listing's unit if the response said there is more."""
        for exc in listing.errors:
            self._fail(exc)

    def _keep_listing(self, connection: sa.Connection, kept: Kept | None, listing: normalize.Listing) -> None:
        """Keep a listing's response and the entries it quarantined, in the transaction of its work."""
        self._keep(connection, kept)
        if self.report.run_id is not None and listing.rejected:
            endpoint = f"{kept.response.method} {kept.response.path}" if kept is not None else "(not kept)"
            store.save_rejected(connection, self.report.run_id, endpoint, listing.rejected, self.now)

    def _fail(self, exc: JobError) -> None:
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


def _write_failed(problem: str) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"writing to the database failed: {problem}; "
        "everything committed before this point is intact, rerun to finish"
    )


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
