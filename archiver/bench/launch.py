"""Run a command and print its wall time and peak RSS: `python -m archiver.bench.launch CMD...`.

A child's peak RSS (from wait4) includes what its parent held when it forked, and the benchmark
process is large; this launcher is small, so the figure it prints is the command's own.
Output: the command's stdout, then one line `<peak RSS in KiB> <seconds>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def launch(argv: list[str]) -> int:
    """Run argv, then print its peak RSS and wall time; return its exit status."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    print(usage.ru_maxrss, f"{seconds:.3f}", flush=True)  # ru_maxrss is in KiB on Linux
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
