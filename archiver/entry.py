"""The `archiver` console script: take signals first, then load and run the command line.

SIGINT and SIGTERM are handled from the first moment (see `archiver.stopping`), and the process
ends with `os._exit` once its output is flushed: the interpreter's own shutdown would put the
default handlers back (a signal then killed the process) and wait for threads still reading.
"""

from __future__ import annotations

import os
import sys
from contextlib import suppress

from archiver import stopping


def main() -> None:
    """Run the command line; exit with its status, or 130 when a signal came."""
    stopping.install()  # before the command line's imports, which take a good part of a second
    try:
        from archiver.cli import main as cli_main

        cli_main()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            _say(str(exc.code))
    except stopping.Stopped as exc:
        status = _stopped(f"stopped by {exc.signal_name} before anything was done", event="interrupted")
    if (name := stopping.received()) is not None and status != stopping.EXIT_STATUS:
        status = _stopped(f"received {name} as the command ended; its work is complete", event="signal")
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


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


def _say(text: str) -> None:
    with suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
