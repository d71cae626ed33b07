"""How long each thread of this process ran on a core: what a sampled or profiled sync's wall time hides.

A thread's time by phase counts what it was doing while the run lasted, waiting included: a writer
"busy" all along may have spent much of it waiting for the GIL. A thread's own CPU time counts only
the time it ran: its Python (which needs the GIL) and the C code that lets go of it (SQLite's steps,
zlib). So the run's threads are read from the kernel's account of each (Linux: `/proc/self/task`),
every `INTERVAL_S` by a thread of its own, without touching the threads themselves. A thread that
ends loses what it ran since its last reading (a fetch worker ends idle, when the pool shuts down).
Elsewhere nothing is read, and the figures are absent.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

INTERVAL_S = 0.1
_TASKS = Path("/proc/self/task")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(native_id: int) -> float | None:
    """The CPU time of this process's thread `native_id` so far, or None when it cannot be read (gone)."""
    try:  # nanoseconds on a core, when the kernel keeps scheduler statistics
        return int((_TASKS / str(native_id) / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:  # user and system time, in clock ticks, after the command name (which may hold spaces)
        fields = (_TASKS / str(native_id) / "stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def available() -> bool:
    """Whether threads' CPU time can be read here."""
    return cpu_seconds(threading.get_native_id()) is not None


class ThreadClocks:
    """Read every thread's CPU time from start to stop; sum what each ran meanwhile by thread name."""

    def __init__(self, interval: float = INTERVAL_S) -> None:
        self.interval = interval
        self._last: dict[int, tuple[str, float]] = {}  # native id -> (thread name, CPU seconds)
        self._before: dict[int, float] = {}  # what the threads alive at the start had run by then
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread clocks", daemon=True)

    def read(self) -> None:
        """Read each live thread's CPU time (but this reader's own)."""
        for thread in threading.enumerate():
            native_id = thread.native_id
            if thread is self._thread or native_id is None:
                continue
            seconds = cpu_seconds(native_id)
            if seconds is not None:
                self._last[native_id] = (thread.name, seconds)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.read()

    def start(self) -> None:
        if available():
            self.read()
            self._before = {native_id: seconds for native_id, (_, seconds) in self._last.items()}
            self._thread.start()

    def stop(self) -> None:
        """Stop reading in the background, then read the threads still alive once more."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self.read()

    def by_name(self) -> dict[str, float]:
        """CPU seconds by thread name (empty where they cannot be read)."""
        totals: dict[str, float] = defaultdict(float)
        for native_id, (name, seconds) in self._last.items():
            totals[name] += seconds - self._before.get(native_id, 0.0)
        return dict(totals)


class Measured:
    """A span's wall time, the process's CPU time over it, and its threads' (see `ThreadClocks`)."""

    def __init__(self) -> None:
        self.clocks = ThreadClocks()
        self.wall_seconds = 0.0
        self.process_cpu_seconds = 0.0

    def __enter__(self) -> Measured:
        self._cpu_started = time.process_time()
        self.clocks.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall_seconds = time.perf_counter() - self._started
        self.clocks.stop()
        self.process_cpu_seconds = time.process_time() - self._cpu_started
