"""`archiver check`: did last night work? A check per question, each ok, warning or error.

    database    reachable, opened for reading (a check never creates or changes anything)
    schema      at the revision this archiver needs
    last_run    how the latest finished full run ended: succeeded ok; partial, interrupted warning; failed error
    freshness   the last successful full run ended within --max-age (else error) and --warn-age (else
                warning), as dbt's `source freshness` has error_after and warn_after
    running     no run recorded `running` has died (its process gone: its lock is free), and none has
                been running longer than --max-run-time (stuck); either is an error
    scoped      the latest scoped run (--project, --job), for information: it never makes check fail,
                nor green; only full runs (of the whole organisation) say how the archive stands
    clock       no run is stamped in the future (the machine clock was ahead): warning
    drain       no live job or project lost more than half of its checkpoints within --drain-window
                (7d): a bad API can take a little less than half a night, night after night: warning

A full run is one of the whole organisation; a scoped run (`sync --project/--job`) succeeding after
a failed nightly run says nothing of the rest of the archive.

The command exits with the worst status: 0 ok, 4 warning, 5 error (2 stays a usage error), so a
monitoring system can page on 5 and open a ticket on 4.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from archiver import clock, db, drain, durations, ledger, lock, migrate
from archiver.errors import DatabaseUnavailable, SchemaOutOfDate
from archiver.schema import SCHEMA_REVISION, sync_errors, sync_runs

OK, WARNING, ERROR = "ok", "warning", "error"
EXIT_CODES = {OK: 0, WARNING: 4, ERROR: 5}
DEFAULT_MAX_AGE = timedelta(hours=26)  # a nightly run, with two hours' slack
DEFAULT_MAX_RUN_TIME = timedelta(hours=24)  # sync --max-run-time stops a run before this


@dataclass(frozen=True)
class Limits:
    """How old the last success may be, and how long a run may take."""

    max_age: timedelta = DEFAULT_MAX_AGE
    warn_age: timedelta | None = None
    max_run_time: timedelta = DEFAULT_MAX_RUN_TIME
    drain_window: timedelta = drain.DEFAULT_DRAIN_WINDOW


@dataclass(frozen=True)
class Finding:
    """One check's answer: its status, a line for people, and fields for programs."""

    check: str
    status: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def render(self, edit: Callable[[str], str] = str) -> str:
        """One line, `OK      freshness: ...`; `edit` rewrites the message first."""
        return f"{self.status.upper():<7} {self.check}: {edit(self.message)}"

    def as_json(self, edit: Callable[[str], str] = str) -> dict[str, Any]:
        """The check's fields for programs; `edit` rewrites the message first."""
        return {"check": self.check, "status": self.status, "message": edit(self.message), **self.details}


def exit_code(findings: list[Finding]) -> int:
    """The exit status of the worst finding."""
    return max(EXIT_CODES[finding.status] for finding in findings)


def render(findings: list[Finding], fmt: str, edit: Callable[[str], str] = str) -> str:
    """A line per check, or one JSON document: the overall status, the exit code and the checks."""
    if fmt != "json":
        return "\n".join(finding.render(edit) for finding in findings)
    code = exit_code(findings)
    status = next(name for name, value in EXIT_CODES.items() if value == code)
    checks = [finding.as_json(edit) for finding in findings]
    return json.dumps({"status": status, "exit_code": code, "checks": checks}, indent=2)


def check_archive(database_url: str, limits: Limits, now: datetime | None = None) -> list[Finding]:
    """Run every check that can run: those after a failed database or schema check cannot."""
    now = now or datetime.now(UTC)
    try:
        engine = db.open_existing(database_url)
    except DatabaseUnavailable as exc:
        return [Finding("database", ERROR, str(exc))]
    try:
        findings = [Finding("database", OK, f"{db.redact(engine.url)} is reachable")]
        findings.append(_schema(engine))
        if findings[-1].status == OK:
            with engine.connect() as connection:
                findings += [
                    _last_run(connection, now),
                    _freshness(connection, limits, now),
                    _running(engine, connection, limits, now),
                    _scoped(connection, now),
                    _future(connection, now),
                    _drain(connection, limits, now),
                    _metrics(connection),
                ]
        return findings
    except DatabaseUnavailable as exc:
        return [*findings, Finding("database", ERROR, str(exc))]
    except sa.exc.DBAPIError as exc:
        return [
            *findings,
            Finding("database", ERROR, f"reading the archive failed: {db.describe_db_error(exc)}"),
        ]
    finally:
        engine.dispose()


def _schema(engine: Engine) -> Finding:
    try:
        at = migrate.current_revision(engine)
    except SchemaOutOfDate as exc:
        return Finding("schema", ERROR, str(exc))
    details = {"revision": at, "head": SCHEMA_REVISION}
    if at == SCHEMA_REVISION:
        return Finding("schema", OK, f"at revision {at}, the newest", details)
    if at is None:
        message = (
            f"{db.redact(engine.url)} holds no archive yet: run `archiver sync` (or `archiver db upgrade`)"
        )
    elif at not in migrate.known_revisions():
        message = str(migrate.unknown_revision(at))
    else:
        message = f"at revision {at}, this archiver needs {SCHEMA_REVISION}: run `archiver db upgrade`"
    return Finding("schema", ERROR, message, details)


def _latest_finished(connection: Connection, *, scoped: bool) -> sa.Row[Any] | None:
    full = sync_runs.c.scope.is_(None)
    return connection.execute(
        sa.select(sync_runs)
        .where(sync_runs.c.status != ledger.RUNNING, sa.not_(full) if scoped else full)
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    ).first()


def _last_run(connection: Connection, now: datetime) -> Finding:
    run = _latest_finished(connection, scoped=False)
    if run is None:
        return Finding("last_run", ERROR, "no full sync has finished yet: run `archiver sync`")
    failed = connection.execute(
        sa.select(sa.func.count()).where(sync_errors.c.sync_run_id == run.id, sync_errors.c.kind != "gone")
    ).scalar_one()
    status = {ledger.SUCCEEDED: OK, ledger.PARTIAL: WARNING, ledger.INTERRUPTED: WARNING}.get(
        run.status, ERROR
    )
    message = f"full run {run.id} {run.status}, ended {_when(run.finished_at, now)}"
    if run.error_summary and status != OK:
        # A partial run's summary begins with its count ("2 failed: ..."): say it once.
        counted = not failed or run.error_summary.startswith(f"{failed} failed")
        message += f"; {run.error_summary}" if counted else f"; {failed} failed: {run.error_summary}"
    elif failed:
        message += f"; {failed} failed"
    if status != OK:
        message += "; `archiver runs` has the details"
    details = {
        "run_id": run.id,
        "run_status": run.status,
        "ended_at": _iso(run.finished_at),
        "jobs_failed": failed,
        "error_summary": run.error_summary,
    }
    return Finding("last_run", status, message, details)


def _freshness(connection: Connection, limits: Limits, now: datetime) -> Finding:
    succeeded = ledger.last_success(connection)
    max_age = limits.max_age.total_seconds()
    details: dict[str, Any] = {"last_success_at": _iso(succeeded), "max_age_seconds": max_age}
    if limits.warn_age is not None:
        details["warn_age_seconds"] = limits.warn_age.total_seconds()
    if succeeded is None:
        return Finding("freshness", ERROR, "no full sync has succeeded yet: run `archiver sync`", details)
    age = (now - succeeded).total_seconds()
    details["age_seconds"] = round(age, 3)
    message = f"the last successful full run ended {_when(succeeded, now)}"
    if age > max_age:
        return Finding(
            "freshness", ERROR, f"{message}, longer ago than --max-age {durations.describe(max_age)}", details
        )
    if limits.warn_age is not None and age > limits.warn_age.total_seconds():
        warn = durations.describe(limits.warn_age.total_seconds())
        return Finding("freshness", WARNING, f"{message}, longer ago than --warn-age {warn}", details)
    return Finding("freshness", OK, f"{message}, within --max-age {durations.describe(max_age)}", details)


def _running(engine: Engine, connection: Connection, limits: Limits, now: datetime) -> Finding:
    runs = connection.execute(
        sa.select(sync_runs.c.id, sync_runs.c.started_at)
        .where(sync_runs.c.status == ledger.RUNNING)
        .order_by(sync_runs.c.started_at)
    ).all()
    limit = limits.max_run_time.total_seconds()
    if not runs:
        return Finding("running", OK, "no run in progress", {"run_id": None})
    alive = lock.live_runs(engine, connection, [run.id for run in runs])
    if dead := [run for run in runs if run.id not in alive]:
        died = dead[-1]
        details = {"run_id": died.id, "started_at": _iso(died.started_at), "died": True}
        message = (
            f"run {died.id} started {_when(died.started_at, now)} and is recorded `running`, but its process "
            "is gone (its lock is free): it died, killed or crashed; the next sync records it as failed"
        )
        return Finding("running", ERROR, message, details)
    oldest = runs[0]
    age = (now - oldest.started_at).total_seconds()
    details = {"run_id": oldest.id, "started_at": _iso(oldest.started_at), "age_seconds": round(age, 3)}
    if age > limit:
        message = (
            f"run {oldest.id} started {_when(oldest.started_at, now)} and is still `running`, longer than "
            f"--max-run-time {durations.describe(limit)}: it is stuck, or was killed (the next sync records it as failed)"
        )
        return Finding("running", ERROR, message, details)
    return Finding("running", OK, f"run {oldest.id} running since {_when(oldest.started_at, now)}", details)


def _scoped(connection: Connection, now: datetime) -> Finding:
    """The latest scoped run, beside the full ones: information, never a reason to fail or to pass."""
    run = _latest_finished(connection, scoped=True)
    if run is None:
        return Finding("scoped", OK, "no scoped run (--project, --job) has finished", {"run_id": None})
    scope = run.scope or {}
    named = ", ".join(
        f"{kind} {' '.join(ids)}"
        for kind, ids in (("projects", scope.get("projects")), ("jobs", scope.get("jobs")))
        if ids
    )
    message = (
        f"scoped run {run.id} ({named}) {run.status}, ended {_when(run.finished_at, now)}; "
        "it says nothing of the rest of the organisation"
    )
    details = {
        "run_id": run.id,
        "run_status": run.status,
        "ended_at": _iso(run.finished_at),
        "scope": run.scope,
    }
    return Finding("scoped", OK, message, details)


def _future(connection: Connection, now: datetime) -> Finding:
    """A run stamped after now: the clock was ahead when it ran, and later runs are stamped after it."""
    ahead = now + clock.DEFAULT_MAX_CLOCK_SKEW
    run = connection.execute(
        sa.select(sync_runs.c.id, sync_runs.c.started_at)
        .where(sa.or_(sync_runs.c.started_at > ahead, sync_runs.c.finished_at > ahead))
        .order_by(sync_runs.c.started_at.desc())
        .limit(1)
    ).first()
    if run is None:
        return Finding("clock", OK, "no run is stamped in the future", {"run_id": None})
    message = (
        f"run {run.id} is stamped {_iso(run.started_at)}, in the future: the machine clock was ahead when it "
        "ran. Runs after it are stamped after it (stamps never go backwards), so `query --as-of` a time "
        "before that stamp does not see them; set the clock right (README: Time)"
    )
    return Finding("clock", WARNING, message, {"run_id": run.id, "started_at": _iso(run.started_at)})


def _drain(connection: Connection, limits: Limits, now: datetime) -> Finding:
    """A job or project that lost more than half of its checkpoints lately: deletions, or a bad API."""
    window = durations.describe(limits.drain_window.total_seconds())
    found = drain.draining(connection, now, limits.drain_window)
    details = {
        "window_seconds": limits.drain_window.total_seconds(),
        "draining": [d.as_json() for d in found],
    }
    if not found:
        return Finding(
            "drain", OK, f"no job or project lost most of its checkpoints within {window}", details
        )
    named = "; ".join(str(each) for each in found[:3]) + ("; ..." if len(found) > 3 else "")
    message = (
        f"{len(found)} jobs or projects lost more than half of their checkpoints within {window}: {named}. "
        "If they were not deleted on purpose, look at the API's answers (README: History)"
    )
    return Finding("drain", WARNING, message, details)


def _metrics(connection: Connection) -> Finding:
    """Whether the latest finished run could write its --metrics-file (check itself never reads it)."""
    run = connection.execute(
        sa.select(sync_runs.c.id)
        .where(sync_runs.c.status != ledger.RUNNING)
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    ).scalar()
    failed = connection.execute(
        sa.select(sync_errors.c.message)
        .where(sync_errors.c.sync_run_id == run, sync_errors.c.kind == ledger.METRICS)
        .order_by(sync_errors.c.id.desc())
        .limit(1)
    ).scalar()
    if failed is None:
        return Finding(
            "metrics", OK, "the latest run wrote its --metrics-file, if given one", {"run_id": run}
        )
    return Finding(
        "metrics", WARNING, f"run {run} {failed}: alerts on the metrics see no new run", {"run_id": run}
    )


def _when(moment: datetime, now: datetime) -> str:
    """`2026-06-02T02:19:31+00:00 (3h 12m ago)`."""
    return f"{_iso(moment)} ({_ago((now - moment).total_seconds())})"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _ago(seconds: float) -> str:
    if seconds < 0:
        return "in the future: check the clocks"
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return f"{' '.join(parts)} ago" if parts else "under a minute ago"
