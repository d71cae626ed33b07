"""The `archiver` console script: take signals first, then load and run the command line.

SIGINT and SIGTERM are handled from the first moment (see `archiver.stopping`) to the last: once
the command is done they are ignored, and one that came is answered with exit status 130. After a
signal, or with requests a stopped run left still reading, the process ends with `os._exit` once
its output is flushed, rather than waiting for them.
"""

from __future__ import annotations

# `_signal` is the built-in half of `signal`: it loads in microseconds, `signal` in a millisecond.
import _signal  # type: ignore[import-not-found]

# Until `main` takes it, SIGINT has its default action: the process ends at once, as killed by the
# signal (130 in a shell), rather than as a KeyboardInterrupt traceback from this module's imports.
_signal.signal(_signal.SIGINT, _signal.SIG_DFL)

import gc  # noqa: E402  (after the line above, on purpose)
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402
from contextlib import suppress  # noqa: E402

from archiver import network, stopping  # noqa: E402

# Allocations between passes of the collector over young objects (Python's default: 700).
YOUNG_THRESHOLD = 20_000


def main() -> int:
    """Run the command line; return its exit status, or 130 when a signal came at any point."""
    stopping.install()  # before the command line's imports, which take a good part of a second
    sys.unraisablehook = _unraisable
    try:
        _without_unused_extras()
        if sys.argv[1:2] == ["sync"]:  # the TLS context its client needs, made beside the imports
            network.start_tls()
        # What the imports make lives as long as the process: the collector would only go over it again
        # and again as it is made (some 150 passes, 40 ms of a start on 2 cores). Then out of its
        # reach: its passes during the command and the last one at exit skip it (that one took 80 ms).
        gc.disable()
        try:
            from archiver.cli import load
            from archiver.cli import main as cli_main

            load(sys.argv[1:])  # the command's module, which the command line would import later
            gc.freeze()
            # A sync makes millions of containers that live a moment (parsed listings, rows), nearly
            # all freed by their counts as they go. At Python's thresholds (700, 10, 10) the collector
            # made 601 passes over young objects and 58 over older ones in a first load of 92,520
            # checkpoints, 0.29 s under the GIL the writer waits for; at these, 16 and 1, 0.03 s.
            gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
        finally:
            gc.enable()
        cli_main()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            _say(str(exc.code))
    except stopping.Stopped as exc:
        status = _stopped(f"stopped by {exc.signal_name} before it finished", event="interrupted")
    # From here on the interpreter's shutdown would put the default handlers back: a signal then
    # killed the process (-15). Ignored now; one that came before is answered with 130.
    stopping.ignore()
    if (name := stopping.received()) is not None and status != stopping.EXIT_STATUS:
        status = _stopped(f"received {name} as the command ended; its work is complete", event="signal")
    if name is not None or _requests_left():
        # Nothing is left to commit; a request a stopped run left must not hold the process up.
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        os._exit(status)
    return status


# Optional parts of the libraries the archiver uses, which the libraries load whenever what those parts
# need is installed, and which the command never runs. It always is: the progress display needs rich,
# and rich needs pygments.
UNUSED_EXTRAS = (
    # httpx's own `httpx` command, imported by `import httpx`: rich and pygments, 50-60 ms of every start.
    "httpx._main",
    # Mako's syntax highlighting of its HTML error pages (Mako renders Alembic's templates for new
    # revision files), imported with Alembic: pygments' formatters and lexers, about 50 ms of a start
    # that migrates a database (every first load).
    "mako.ext.pygmentplugin",
)


def _without_unused_extras() -> None:
    """Keep the libraries from loading `UNUSED_EXTRAS`, which the archiver never runs.

    With a stand-in module in each one's place, the library's import of it fails as it does where
    what it needs is not installed, and the library carries on without it (httpx without its command,
    Mako with plain error pages). Only in this process: the archiver as a library is left alone.
    """
    for name in UNUSED_EXTRAS:
        if name.partition(".")[0] not in sys.modules:
            sys.modules.setdefault(name, types.ModuleType(name))


def _requests_left() -> bool:
    """Whether threads of a stopped run are still reading (the interpreter would wait for them)."""
    return any(
        t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()
    )


def _stopped(message: str, *, event: str) -> int:
    from archiver import logs

    if logs.asks_for_json(sys.argv[1:]):
        logs.configure_logging(log_format="json")
    logs.say(
        message if logs.json_output() else f"warning: {message}",
        err=True,
        level="warning",
        event=event,
        exit_code=stopping.EXIT_STATUS,
    )
    return stopping.EXIT_STATUS


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """An exception a library's finaliser swallowed (a connection closed as the process ends): -vv only,
    in the archiver's format, never Python's bare "Exception ignored in" lines."""
    import logging

    logging.getLogger("archiver").debug(
        "ignored in %r: %s: %s",
        unraisable.object,
        type(unraisable.exc_value).__name__,
        unraisable.exc_value,
        extra={"event": "ignored"},
    )


def _say(text: str) -> None:
    with suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
