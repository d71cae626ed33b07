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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import ledger, migrate, store
from archiver.client import BasetenClient, unreachable
from archiver.db import describe_db_error
from archiver.errors import ArchiverError, DatabaseUnavailable, Interrupted, JobError, NotFound
from archiver.lock import sync_lock
from archiver.normalize import CheckpointPage, JobRecord, Row, Where, checkpoint_page, job_record, project_row

log = logging.getLogger("archiver.sync")

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

# Rows per write transaction (whole jobs): fewer, larger transactions halve PostgreSQL's per-row cost.
DEFAULT_BATCH_ROWS = 10_000


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
    concurrency: int = 8
    batch_rows: int = DEFAULT_BATCH_ROWS
    migrate: bool = False  # upgrade an out-of-date schema instead of refusing to run
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[int, int], None] | None = None  # (jobs done, jobs known so far)


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
    projects: int = 0
    jobs: int = 0
    jobs_fetched: int = 0
    jobs_skipped: int = 0
    counts: store.WriteCounts = field(default_factory=store.WriteCounts)
    gone: list[Failure] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    interrupted: bool = False

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

    def counters(self) -> dict[str, int]:
        """The run's counters, named as in `sync_runs`."""
        return {
            "projects": self.projects,
            "jobs": self.jobs,
            "jobs_fetched": self.jobs_fetched,
            "jobs_skipped": self.jobs_skipped,
            "jobs_failed": len(self.failures),
            "checkpoints_inserted": self.counts.inserted,
            "checkpoints_updated": self.counts.updated,
            "checkpoints_unchanged": self.counts.unchanged,
            "checkpoints_deleted": self.counts.deleted,
            "requests": self.requests,
        }

    def summary(self) -> str:
        """One paragraph for people and cron mail."""
        c = self.counts
        text = (
            f"Archived {self.projects} projects and {self.jobs} jobs "
            f"({self.jobs_fetched} fetched, {self.jobs_skipped} skipped as unchanged): "
            f"checkpoints {c.inserted} inserted, {c.updated} updated, {c.unchanged} unchanged, "
            f"{c.deleted} marked deleted; {len(self.failures)} failed"
        )
        if self.gone:
            text += f", {len(self.gone)} gone (404)"
        text += f"; {self.requests} requests in {self.seconds:.1f}s."
        if self.interrupted:
            text += " Interrupted before the end: what is complete was committed; rerun to finish."
        return text


def bounded(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], window: int, stop: threading.Event
) -> Iterator[tuple[T, Future[R]]]:
    """Run fn over items with at most `window` in flight; yield each as it completes."""
    pending = iter(items)
    running: dict[Future[R], T] = {}

    def submit_next() -> None:
        if stop.is_set():
            return
        for item in pending:
            running[pool.submit(fn, item)] = item
            return

    for _ in range(window):
        submit_next()
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            item = running.pop(future)
            submit_next()
            yield item, future


@dataclass
class _Listing:
    project: Row
    jobs: list[JobRecord]
    failures: list[Failure]


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
        self.report = SyncReport()
        self._jobs_done = 0

    def run(self) -> SyncReport:
        """Archive the scope; raise FatalError for what stops the run."""
        with sync_lock(self.engine):
            # Under the lock: two first-ever runs must not both create the schema.
            migrate.ensure_current(self.engine, migrate=self.options.migrate)
            run_id = self._write(self._start)
            self.report.run_id = run_id
            started = time.monotonic()
            status, summary = ledger.FAILED, None
            try:
                self._archive()
                status = self.report.status
            except ArchiverError as exc:
                summary = str(exc)
                if self.options.stop.is_set() and not isinstance(exc, Interrupted):
                    # e.g. the project listing gave up waiting to retry because a signal came.
                    raise Interrupted(f"interrupted before the run could finish ({exc})") from None
                raise
            except BaseException as exc:
                summary = f"{type(exc).__name__}: the run stopped unexpectedly"
                raise
            finally:
                self.report.requests = self.client.requests_made
                self.report.seconds = time.monotonic() - started
                self.report.interrupted = self.options.stop.is_set()
                if self.report.interrupted:
                    status = ledger.INTERRUPTED
                self._finish(run_id, status, summary)
        return self.report

    def _start(self, connection: sa.Connection) -> int:
        dead = ledger.close_dead_runs(connection, self.now)
        if dead:
            log.warning("%d earlier run(s) never finished (killed or crashed); recorded them as failed", dead)
        return ledger.start_run(connection, self.now, self.options.scope.as_json(), self.options.full)

    def _finish(self, run_id: int, status: str, summary: str | None) -> None:
        report = self.report
        failures = [(f, f.kind) for f in report.failures] + [(f, "gone") for f in report.gone]
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
                finished_at=utc_now(),
                counts=report.counters(),
                errors=errors,
                error_summary=summary,
            )
        except sa.exc.DBAPIError as exc:
            log.error("could not record the end of run %d: %s", run_id, describe_db_error(exc))

    def _archive(self) -> None:
        targets = self._targets()
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="fetch") as pool:
            jobs = self._archive_listings(pool, targets)
            self._archive_checkpoints(pool, jobs)

    def _targets(self) -> dict[str, set[str] | None]:
        """Project ids to list, each with the job ids wanted (None: all of them)."""
        scope = self.options.scope
        if scope.everything:
            try:
                listed = self.client.list_projects()
            except JobError as exc:  # malformed too: without the listing there is no run
                raise unreachable(exc) from None
            targets: dict[str, set[str] | None] = {}
            complete = True
            for index, raw in enumerate(listed):
                try:
                    targets[project_row(raw, Where(path=f"training_projects[{index}]"))["id"]] = None
                except JobError as exc:
                    complete = False
                    self._fail(exc)
            if complete:
                self._note_deleted(self._write(store.mark_projects_deleted, set(targets), self.now))
            return targets
        targets = dict.fromkeys(scope.project_ids)
        for job_id in scope.job_ids:
            project_id = self._project_of(job_id)
            if project_id is None:
                continue
            wanted = targets.setdefault(project_id, set())
            if wanted is not None:
                wanted.add(job_id)
        return targets

    def _project_of(self, job_id: str) -> str | None:
        """Resolve a bare job id to its project with the search endpoint."""
        try:
            found = self.client.search_jobs(job_id=job_id)
            for index, raw in enumerate(found):
                record = job_record(raw, Where(job_id=job_id, path=f"training_jobs[{index}]"))
                if record.row["id"] == job_id:
                    return str(record.row["training_project_id"])
        except JobError as exc:
            self._fail(exc.located(project_id=None, job_id=job_id))
            return None
        self._fail(JobError("no such job in this organisation (the job search found nothing)", job_id=job_id))
        return None

    def _archive_listings(
        self, pool: ThreadPoolExecutor, targets: dict[str, set[str] | None]
    ) -> list[tuple[str, str]]:
        """List each project's jobs and archive project and job rows; return the jobs to fetch."""
        to_fetch: list[tuple[str, str]] = []
        window = self.options.concurrency * 2
        for project_id, future in bounded(pool, self._fetch_listing, targets, window, self.options.stop):
            try:
                listing = future.result()
            except NotFound as exc:
                if not self.options.scope.everything:
                    # Asked for by name: a typo or a project outside the key's teams, not news of a deletion.
                    self._fail(
                        JobError(
                            "no such project, or not visible to this API key (HTTP 404)",
                            project_id=project_id,
                        )
                    )
                    continue
                self._fail(exc.located(project_id=project_id, job_id=None))
                self._note_deleted(self._write(store.mark_project_gone, [project_id], self.now))
                continue
            except JobError as exc:
                self._fail(exc.located(project_id=project_id, job_id=None))
                continue
            wanted = targets[project_id]
            jobs = [job for job in listing.jobs if wanted is None or job.row["id"] in wanted]
            for job_id in sorted((wanted or set()) - {job.row["id"] for job in jobs}):
                self._fail(
                    JobError("the job is not in its project's job list", project_id=project_id, job_id=job_id)
                )
            self.report.failures.extend(listing.failures)
            complete = wanted is None and not listing.failures
            skip = self._write(self._save_listing, listing.project, jobs, complete)
            self.report.projects += 1
            self.report.jobs += len(jobs)
            self.report.jobs_skipped += len(skip)
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
        self, connection: sa.Connection, project: Row, jobs: list[JobRecord], complete: bool
    ) -> set[str]:
        """Write a project's listing; return the ids of jobs whose checkpoints need no read."""
        states = {} if self.options.full else store.fetch_states(connection, [job.row["id"] for job in jobs])
        skip = {job.row["id"] for job in jobs if store.can_skip(job, states.get(job.row["id"]))}
        store.save_listing(connection, project, jobs, self.now, self.report.run_id)
        if complete:
            listed = {job.row["id"] for job in jobs}
            self.report.counts.deleted += store.mark_jobs_deleted(connection, project["id"], listed, self.now)
        self._record_progress(connection)
        return skip

    def _fetch_listing(self, project_id: str) -> _Listing:
        raw_project, raw_jobs = self.client.list_jobs(project_id)
        where = Where(project_id)
        project = project_row(raw_project, where / "training_project")
        if project["id"] != project_id:
            # Archiving it would overwrite that other project and mark its jobs deleted.
            raise (where / "training_project.id").fail(
                f"expected project {project_id!r}, got {project['id']!r}"
            )
        jobs: dict[str, JobRecord] = {}  # a job listed twice: the later entry wins, as for checkpoints
        failures: list[Failure] = []
        for index, raw in enumerate(raw_jobs):
            try:
                record = job_record(raw, where / "training_jobs" / index)
            except JobError as exc:
                failures.append(_failure(exc))
                continue
            jobs.pop(record.row["id"], None)
            jobs[record.row["id"]] = record
        return _Listing(project, list(jobs.values()), failures)

    def _archive_checkpoints(self, pool: ThreadPoolExecutor, jobs: list[tuple[str, str]]) -> None:
        """Fetch every job's checkpoints; write whole jobs in batches."""
        batch: list[CheckpointPage] = []
        rows = 0
        window = self.options.concurrency * 2
        for (project_id, job_id), future in bounded(pool, self._fetch_page, jobs, window, self.options.stop):
            try:
                page = future.result()
            except NotFound as exc:
                self._fail(exc.located(project_id=project_id, job_id=job_id))
                self._note_deleted(self._write(store.mark_jobs_gone, [job_id], self.now))
                self._progress(1)
                continue
            except JobError as exc:
                self._fail(exc.located(project_id=project_id, job_id=job_id))
                self._progress(1)
                continue
            if page.duplicates:
                log.warning(
                    "project %s, job %s: checkpoint ids listed twice, the later entry kept: %s",
                    project_id,
                    job_id,
                    ", ".join(sorted(set(page.duplicates))),
                )
            batch.append(page)
            rows += len(page.checkpoints) + 1
            if rows >= self.options.batch_rows:
                self._flush(batch)
                batch, rows = [], 0
        self._flush(batch)

    def _fetch_page(self, target: tuple[str, str]) -> CheckpointPage:
        project_id, job_id = target
        return checkpoint_page(self.client.get_checkpoints(project_id, job_id), project_id, job_id)

    def _flush(self, pages: list[CheckpointPage]) -> None:
        if not pages:
            return
        self._write(self._save_pages, pages)
        for page in pages:
            job = page.job.row
            log.info(
                "project %s, job %s: %d checkpoints",
                page.project_id,
                job["id"],
                len(page.checkpoints),
                extra={
                    "event": "job",
                    "project_id": page.project_id,
                    "job_id": job["id"],
                    "status": job["current_status"],
                    "checkpoints": len(page.checkpoints),
                },
            )
        self._progress(len(pages))

    def _save_pages(self, connection: sa.Connection, pages: list[CheckpointPage]) -> None:
        counts = store.save_checkpoint_pages(connection, pages, self.now, self.report.run_id)
        self.report.counts += counts
        self.report.jobs_fetched += len(pages)
        self._record_progress(connection)

    def _record_progress(self, connection: sa.Connection) -> None:
        # In the same transaction as the work it counts: a killed run's row stays truthful.
        if self.report.run_id is not None:
            self.report.requests = self.client.requests_made
            ledger.record_progress(connection, self.report.run_id, self.report.counters())

    def _note_deleted(self, checkpoints_marked: int) -> None:
        self.report.counts.deleted += checkpoints_marked

    def _progress(self, done: int) -> None:
        self._jobs_done += done
        if self.options.progress is not None:
            self.options.progress(self._jobs_done, self.report.jobs)

    def _write(
        self, work: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `work` in one transaction; a database failure ends the run."""
        try:
            with self.engine.begin() as connection:
                return work(connection, *args, **kwargs)
        except sa.exc.DBAPIError as exc:
            raise DatabaseUnavailable(
                f"writing to the database failed: {describe_db_error(exc)}; "
                "everything committed before this point is intact, rerun to finish"
            ) from None

    def _fail(self, exc: JobError) -> None:
        failure = _failure(exc)
        fields = {"event": failure.kind, "project_id": failure.project_id, "job_id": failure.job_id}
        if isinstance(exc, NotFound):
            self.report.gone.append(failure)
            log.warning("%s", failure, extra=fields)
        else:
            self.report.failures.append(failure)
            log.error("%s", failure, extra=fields)


def _failure(exc: JobError) -> Failure:
    return Failure(exc.project_id, exc.job_id, exc.kind, exc.message)


def run_sync(
    engine: Engine,
    client: BasetenClient,
    options: SyncOptions | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> SyncReport:
    """Run one sync and return its report."""
    return Sync(engine, client, options or SyncOptions(), clock).run()
