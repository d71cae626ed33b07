"""Sample every thread's stack while `work` runs, and sum the time by phase: a profile that barely slows the run.

Every `INTERVAL_S` a sampler thread reads each thread's current frame (`sys._current_frames`) and names its
phase by the innermost frame a rule of `phases.phase_of` names (a builtin such as `zlib.compress` or the
driver's `executemany` is no frame: the Python function calling it is); the time since the last sample
goes to that phase of that thread. Unlike a deterministic profiler it adds no cost to each call, so the
threads keep the pace and the balance they have unprofiled. It is blind while one thread holds the GIL in
C code (a long `json.loads`): the sampler waits for the GIL, and that time goes to what each thread does
when it gets it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from types import CodeType, FrameType

from archiver.bench.clocks import Measured
from archiver.bench.phases import OTHER, ROLES, Breakdown, Func, enclosing_names, phase_of, role_of

INTERVAL_S = 0.004
SAMPLER_THREAD = "phase sampler"


class Sampler:
    """Sum sampled time by thread role and phase until stopped."""

    def __init__(self, interval: float = INTERVAL_S) -> None:
        self.interval = interval
        self.seconds: dict[str, dict[str, float]] = {role: defaultdict(float) for role in ROLES}
        self.threads: dict[str, set[int]] = {role: set() for role in ROLES}
        self._names: dict[int, str] = {}
        self._phases: dict[CodeType, str | None] = {}
        self._enclosing = enclosing_names()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=SAMPLER_THREAD, daemon=True)

    def _phase(self, frame: FrameType | None) -> str:
        while frame is not None:
            code = frame.f_code
            if code not in self._phases:
                func: Func = (code.co_filename, code.co_firstlineno, code.co_name)
                self._phases[code] = phase_of(func, self._enclosing)
            if (phase := self._phases[code]) is not None:
                return phase
            frame = frame.f_back
        return OTHER

    def _run(self) -> None:
        me = threading.get_ident()
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            frames = sys._current_frames()
            now = time.perf_counter()
            elapsed, last = now - last, now
            for ident, frame in frames.items():
                if ident == me:
                    continue
                if ident not in self._names:
                    self._names = {t.ident: t.name for t in threading.enumerate() if t.ident is not None}
                role = role_of(self._names.get(ident, ""))
                self.threads[role].add(ident)
                self.seconds[role][self._phase(frame)] += elapsed
            del frames

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def sample_threads(work: Callable[[], object], interval: float = INTERVAL_S) -> Breakdown:
    """Run `work` while sampling every thread's stack; sum the time by role and phase."""
    sampler = Sampler(interval)
    with Measured() as measured:
        sampler.start()
        try:
            work()
        finally:
            sampler.stop()
    breakdown = Breakdown(
        seconds={role: dict(by_phase) for role, by_phase in sampler.seconds.items()},
        threads={role: len(idents) for role, idents in sampler.threads.items()},
    )
    breakdown.measured(measured, profiler_thread=SAMPLER_THREAD)
    return breakdown
