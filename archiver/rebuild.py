"""Rebuild an archive from the API responses it kept: replay every run, in order, into an empty database.

Each run is replayed through the same code that archived it (client, normalize, store), with its
own clock, scope and options, against a transport that answers from that run's kept responses. A
request the run got no usable answer to (a failure, or work cut short by a signal or a kill) gets
none now either, so it fails again and writes nothing, as it did: the replay commits what the run
committed. With the same code the result equals the archive; with a fixed parser it is what the
archive would have been, which is how a fix reaches the past.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, facts, migrate, query, responses
from archiver.client import BasetenClient, RetryPolicy
from archiver.errors import ArchiverError, CorruptResponse, UsageError
from archiver.schema import api_responses, sync_runs
from archiver.sync import Scope, SyncOptions, run_sync

log = logging.getLogger("archiver.rebuild")

REPLAY_URL = "http://replay.invalid"
# Never sent anywhere (the transport answers in-process), and shorter than a secret is masked: the
# masking of a key in any 8-character run of it would rewrite words of every message.
REPLAY_KEY = "replay"


@dataclass
class RebuildReport:
    """What a rebuild replayed."""

    runs: int = 0
    replayed: int = 0
    without_responses: list[int] = field(default_factory=list)  # runs that kept nothing to replay
    skipped: list[str] = field(default_factory=list)  # corrupt kept responses left out (--skip-corrupt)
    failed: list[tuple[int, str]] = field(default_factory=list)  # runs whose replay stopped, and why

    def summary(self) -> str:
        """One paragraph for people."""
        text = f"Replayed {self.replayed} of {self.runs} runs."
        if self.without_responses:
            text += (
                f" {len(self.without_responses)} kept no responses (archived before revision 0006, or they "
                "stopped before any answer): their data is not in the rebuilt archive."
            )
        if self.failed:
            text += f" {len(self.failed)} ended early in the replay as in the original (see `archiver runs`)."
        if self.skipped:
            text += f" Skipped {len(self.skipped)} corrupt kept responses (--skip-corrupt): " + "; ".join(
                self.skipped[:3]
            )
        return text


class ReplayTransport(httpx.BaseTransport):
    """Answer a run's requests with the responses it kept; a request it got no answer to fails again."""

    def __init__(self, answers: dict[responses.RequestKey, responses.Answer]) -> None:
        self._answers = answers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.raw_path.decode("ascii"), responses.request_body(request.read()))
        answer = self._answers.get(key)
        if answer is None:
            raise httpx.ConnectError("the original run kept no answer to this request", request=request)
        headers = dict(answer.headers)
        if answer.content_type:
            headers["Content-Type"] = answer.content_type
        return httpx.Response(answer.status, headers=headers, content=answer.body, request=request)


@dataclass(frozen=True)
class _Run:
    id: int
    started_at: datetime
    finished_at: datetime | None
    scope: dict[str, Any] | None
    full: bool
    options: dict[str, Any] | None

    def sync_options(self, stop: threading.Event) -> SyncOptions:
        """The options the run had, as far as they decided what it archived."""
        scope = self.scope or {}
        options = self.options or {}
        recheck = options.get("recheck_after_seconds")
        return SyncOptions(
            Scope(tuple(scope.get("projects", ())), tuple(scope.get("jobs", ()))),
            full=self.full,
            allow_mass_delete=bool(options.get("allow_mass_delete")),
            recheck_after=None if recheck is None else timedelta(seconds=recheck),
            max_clock_skew=None,  # a replay runs on the run's own clock: there is nothing to check
            stop=stop,
            # its own end; a run that never recorded one (killed) ends where it started
            finished_at=self.finished_at or self.started_at,
            refresh_facts=False,  # once, after the last run
        )


def rebuild(
    source_url: str,
    target_url: str,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    skip_corrupt: bool = False,
) -> RebuildReport:
    """Replay the archive at `source_url` into the empty database at `target_url`."""
    source = query.open_archive(source_url)
    target = db.make_engine(target_url)
    try:
        db.check_connection(target)
        if sa.inspect(target).get_table_names():
            raise UsageError(
                f"{db.redact(target.url)} is not empty: rebuild writes into an empty database only "
                "(create a new one, or point --database-url elsewhere)"
            )
        # A new archive, made as a first sync makes one: on SQLite from the schema snapshot (`archiver.snapshot`).
        migrate.ensure_current(target)
        report = _replay(source, target, stop or threading.Event(), progress, skip_corrupt)
        with target.begin() as connection:
            facts.refresh(connection)
        return report
    finally:
        source.dispose()
        target.dispose()


def _at(moment: datetime) -> Callable[[], datetime]:
    """A clock stopped at `moment`: a replayed run happens when the original did."""
    return lambda: moment


def _replay(
    source: Engine,
    target: Engine,
    stop: threading.Event,
    progress: Callable[[int, int], None] | None,
    skip_corrupt: bool,
) -> RebuildReport:
    with query.read_only(source) as connection:
        runs = [
            _Run(*row)
            for row in connection.execute(
                sa.select(
                    sync_runs.c.id,
                    sync_runs.c.started_at,
                    sync_runs.c.finished_at,
                    sync_runs.c.scope,
                    sync_runs.c.full_sync,
                    sync_runs.c.options,
                ).order_by(sync_runs.c.started_at, sync_runs.c.id)
            )
        ]
        kept = set(connection.scalars(sa.select(api_responses.c.sync_run_id).distinct()))
    report = RebuildReport(runs=len(runs))
    for number, run in enumerate(runs, 1):
        if stop.is_set():
            break
        if run.id not in kept:
            report.without_responses.append(run.id)
            continue
        with query.read_only(source) as connection:
            answers, corrupt = responses.of_run(connection, run.id)
        for bad in corrupt:
            if not skip_corrupt:
                raise CorruptResponse(
                    f"run {run.id}: {bad}; the rebuilt archive would not be the archive. Restore the source "
                    "from a backup, or rerun with --skip-corrupt to replay the rest without it"
                )
            report.skipped.append(f"run {run.id}: {bad}")
            log.warning("run %d: %s: skipped (--skip-corrupt)", run.id, bad, extra={"event": "corrupt"})
        transport = ReplayTransport(answers)
        client = BasetenClient(
            REPLAY_KEY, REPLAY_URL, max_rps=1e9, retry=RetryPolicy(attempts=1), transport=transport
        )
        with client:
            try:
                run_sync(target, client, run.sync_options(stop), clock=_at(run.started_at))
            except ArchiverError as exc:
                # The original ended here too (its answers stop where its work did): replay on.
                report.failed.append((run.id, str(exc)))
        report.replayed += 1
        log.info(
            "replayed run %d of %d (run %d of %s)", number, len(runs), run.id, run.started_at.isoformat()
        )
        if progress is not None:
            progress(number, len(runs))
    return report
