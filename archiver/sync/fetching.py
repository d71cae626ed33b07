"""Make the run's requests: a bounded number at a time, each answer parsed and kept with its response."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import IO, Any, Generic, TypeVar, cast

from archiver.answer import ApiResponse
from archiver.errors import JobError, MalformedResponse, NotFound
from archiver.responses import Kept

log = logging.getLogger("archiver.sync")

T = TypeVar("T")
R = TypeVar("R")

# A stopping run waits this long for requests already under way, then leaves them: a signal ends
# the process within two seconds, whatever a request is doing.
STOP_GRACE_S = 1.0


def bounded(
    pool: ThreadPoolExecutor,
    fn: Callable[[T], R],
    items: Iterable[T],
    window: int | Callable[[], int],
    stop: Callable[[], bool],
    idle: Callable[[], object] | None = None,
) -> Iterator[tuple[T, Future[R]]]:
    """Run fn over items with at most `window` in flight; yield each as it completes.

    A `window` that is a function is asked again after each: the caller may let more run ahead
    while it is busy with what it was given (see `CheckpointStep`). When none has completed yet,
    `idle` is called first, once per wait: the caller may do now what it would do later. Once
    `stop()` holds, nothing more starts, and what is still running after STOP_GRACE_S is left.
    """
    limit = window if callable(window) else lambda: window
    pending = iter(items)
    running: dict[Future[R], T] = {}
    finished: SimpleQueue[Future[R]] = SimpleQueue()  # in the order they finish: no scan of all running
    give_up_at: float | None = None

    def submit_next() -> bool:
        if stop():
            return False
        for item in pending:
            future = pool.submit(fn, item)
            running[future] = item
            future.add_done_callback(finished.put)
            return True
        return False

    while len(running) < limit() and submit_next():
        pass
    while running:
        if give_up_at is None and stop():
            give_up_at = time.monotonic() + STOP_GRACE_S
        if give_up_at is not None and time.monotonic() >= give_up_at:
            log.info("stopping: %d requests still under way are left unfinished", len(running))
            return
        if idle is not None and finished.empty():
            idle()
        try:  # a bounded wait, so that a stop is noticed while every request is still running
            future = finished.get(timeout=0.1)
        except Empty:
            continue
        item = running.pop(future)
        while len(running) < limit() and submit_next():
            pass
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


def fetch(
    request: Callable[[], ApiResponse],
    parse: Callable[[Any, str], T],
    stream: Callable[[IO[bytes], str], T | None] | None = None,
) -> Fetched[T]:
    """Make a request and parse its answer and `Link` header, keeping the response whatever the parse makes of it.

    A body the client left on disk goes to `stream`, which reads it as one (None: it must be read
    whole after all). A 404 keeps its body too: the archive acts on it. Other failed requests have
    no answer to keep.
    """
    try:
        response = request()
    except NotFound as exc:
        return Fetched(Kept.of(exc.response) if isinstance(exc.response, ApiResponse) else None, error=exc)
    except JobError as exc:
        return Fetched(None, error=exc)
    kept = Kept.of(response)
    try:
        if response.spilled is not None:
            streamed = stream(response.spilled.file, response.link) if stream is not None else None
            if streamed is not None:
                return Fetched(kept, streamed)
            response = response.read_whole()
        payload, link = response.json(), response.link
        del response  # the raw body: what is parsed from it takes its place
        return Fetched(kept, parse(payload, link))
    except JobError as exc:
        return Fetched(kept, error=exc)
    except RecursionError:  # the contract bounds depth; this is the net under it
        return Fetched(kept, error=MalformedResponse("a value is nested too deeply to read"))
