"""SIGINT and SIGTERM: whatever the archiver is doing when one comes, it stops cleanly with status 130.

Kept free of heavy imports: the entry point installs the handler before anything else is loaded,
so a signal in the first fraction of a second is handled too. What a signal does depends on when:

    before a run     nothing is committed yet: stop at once (raise `Stopped`; the entry point exits 130)
    during a run     the run's own handler: stop fetching, commit what is complete (a second: at once)
    after a run      the work is committed: only note it; the entry point exits 130 when done
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_STATUS = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A signal came before any work began: end the command now, quietly, with status 130.

    Not a KeyboardInterrupt: Click turns those into "Aborted!" and status 1.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.signal_name = name


class _State:
    received: str | None = None  # the first signal's name
    run: Callable[[str], None] | None = None  # a run in progress takes signals itself
    finished = False  # a run has ended: its work is committed, nothing to stop


_state = _State()


def received() -> str | None:
    """The name of the first SIGINT or SIGTERM this process received, if one came."""
    return _state.received


def _handle(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    first = _state.received is None
    _state.received = _state.received or name
    if _state.run is not None:
        _state.run(name)
    elif first and not _state.finished:
        raise Stopped(name)


def install() -> None:
    """Take SIGINT and SIGTERM from here on (the entry point calls this first thing)."""
    for sig in SIGNALS:
        signal.signal(sig, _handle)


def ignore() -> None:
    """Ignore SIGINT and SIGTERM from here on: the command is done, and exits as it would have."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextmanager
def during_run(on_signal: Callable[[str], None]) -> Iterator[None]:
    """Hand signals to `on_signal(name)` while a run goes on; afterwards, only note them.

    Installs the handler for the duration when the entry point did not (a run called in-process).
    """
    previous = {sig: signal.signal(sig, _handle) for sig in SIGNALS}
    _state.run = on_signal
    try:
        yield
    finally:
        _state.run = None
        _state.finished = True
        for sig, handler in previous.items():
            if handler is not _handle:
                signal.signal(sig, handler)
                _state.finished = False  # in-process: the next run starts afresh
