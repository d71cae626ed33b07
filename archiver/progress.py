"""How far a sync has come, for whoever is watching: a live bar on a terminal, periodic records in JSON logs.

On a terminal (stderr a TTY, no -v, not JSON, not --quiet) a rich progress bar shows jobs and checkpoints done,
the rate and the time left. With `--log-format json` a `"event": "progress"` record goes out every
`interval` seconds (and one at the end), for log shippers. Anywhere else (cron, a pipe) nothing is written:
the logs and the summary say all there is to say.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from archiver import logs

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

DEFAULT_INTERVAL_S = 30.0


class SyncProgress:
    """A progress callback `(jobs done, jobs known, checkpoints done)` and the display it drives.

    Use it as a context manager around the run: the bar is drawn while the run goes and cleared after.
    """

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, *, clock: Callable[[], float] = time.monotonic
    ):
        self._clock = clock
        self._started = clock()
        self._interval_s = interval_s
        self._last_record: float | None = None
        self._state = (0, 0, 0)
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        level = logging.getLogger("archiver").getEffectiveLevel()
        if level > logging.WARNING:  # --quiet: a night that goes well says nothing
            self._mode = "off"
        elif logs.json_output():
            self._mode = "json"
        elif sys.stderr.isatty() and level == logging.WARNING:  # -v lines would tear through a bar
            self._mode = "bar"
        else:
            self._mode = "off"

    @property
    def active(self) -> bool:
        """Whether anything is shown at all."""
        return self._mode != "off"

    def __enter__(self) -> SyncProgress:
        if self._mode == "bar":
            # Loaded here: a sync with no terminal to draw on (cron) does without it.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]jobs"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[checkpoints]:,} checkpoints"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=True,  # cleared at the end: the summary follows
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("sync", total=None, checkpoints=0, rate="")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._mode == "json" and self._last_record is not None:
            self._record()  # where the run ended, whatever the interval

    def __call__(self, jobs_done: int, jobs_total: int, checkpoints: int = 0) -> None:
        self._state = (jobs_done, jobs_total, checkpoints)
        if self._bar is not None and self._task is not None:
            rate = self._rate(jobs_done)
            self._bar.update(
                self._task,
                completed=jobs_done,
                total=max(jobs_total, jobs_done) or None,
                checkpoints=checkpoints,
                rate=f"{rate:,.1f} jobs/s" if rate else "",
            )
        elif self._mode == "json":
            now = self._clock()
            if self._last_record is None or now - self._last_record >= self._interval_s:
                self._record()

    def _rate(self, jobs_done: int) -> float:
        elapsed = self._clock() - self._started
        return jobs_done / elapsed if elapsed > 0 else 0.0

    def _record(self) -> None:
        jobs_done, jobs_total, checkpoints = self._state
        rate = self._rate(jobs_done)
        left = (jobs_total - jobs_done) / rate if rate and jobs_total >= jobs_done else None
        self._last_record = self._clock()
        logs.say(
            f"jobs {jobs_done}/{jobs_total}, {checkpoints} checkpoints",
            err=True,
            event="progress",
            jobs_done=jobs_done,
            jobs_total=jobs_total,
            checkpoints=checkpoints,
            jobs_per_second=round(rate, 3),
            seconds_left=None if left is None else round(left, 1),
        )
