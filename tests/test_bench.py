"""`python -m archiver.bench` still runs: a tiny organisation, SQLite only, every figure printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--jobs", "4", "--checkpoints", "3", "--jobs-per-project", "2", "--latency-ms", "10"]
TINY += ["--one-job-checkpoints", "5"]
NUMBER = r"[\d,.]+"


@pytest.mark.slow
def test_the_benchmark_runs_on_a_tiny_organisation_and_prints_its_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARCHIVER_BENCH_POSTGRES_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "archiver.bench", *TINY],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Organisation: 2 projects x 2 jobs, 12 checkpoints" in out
    assert "PostgreSQL skipped" in out
    figures = [
        rf"sqlite +1: first load +{NUMBER} +{NUMBER} +{NUMBER}x  (met|NOT MET)",
        rf"sqlite +2: 10% rows changed +{NUMBER} +{NUMBER} +{NUMBER}x  (met|NOT MET)",
        rf"sqlite +{NUMBER}s +{NUMBER} checkpoints/s +{NUMBER} requests/s  peak RSS +{NUMBER} MiB",
        rf"3 sqlite +{NUMBER}s for 7 requests, floor {NUMBER}s: {NUMBER}x, 0 429s",  # 1 + 2 projects + 4 jobs
        rf"4 sqlite +{NUMBER}s for 3 requests, ",  # 1 + 2 projects: nothing changed
        r"5\. Memory: sync of one job with 5 checkpoints on loopback",
        rf"sqlite +{NUMBER}s  peak RSS +{NUMBER} MiB  target < 200 MiB: (met|NOT MET)",
        rf"Benchmark took {NUMBER}s\.",
    ]
    for figure in figures:
        assert re.search(figure, out), f"no line matches {figure!r} in:\n{out}"
    assert not list(tmp_path.iterdir())  # it left nothing where it ran
