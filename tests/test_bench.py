"""`python -m archiver.bench` still runs: a tiny organisation, SQLite only, every figure printed, its
figures appended to the history; the per-phase breakdown of a profiled sync, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from archiver.bench import phases
from archiver.bench.__main__ import LOOPBACK_OPTIONS, due_for_reread, read_times, spec_for
from archiver.bench.fake_server import fake_server
from archiver.bench.runs import profile_sync, run_sync

from .support.databases import KINDS, databases

TINY = ["--jobs", "4", "--checkpoints", "3", "--jobs-per-project", "2", "--latency-ms", "10"]
TINY += ["--one-job-checkpoints", "5", "--large-listing", "7"]
NUMBER = r"[\d,.]+"


@pytest.mark.slow
def test_the_benchmark_runs_on_a_tiny_organisation_and_prints_its_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARCHIVER_BENCH_POSTGRES_URL"}
    where, history = tmp_path / "run", tmp_path / "history.jsonl"
    where.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "archiver.bench", *TINY, "--history", str(history)],
        env=env,
        cwd=where,
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
        r"2\. Full sync on loopback, no latency \(--max-rps 100000 --concurrency 8\), the median of 3 run\(s\)",
        rf"sqlite +{NUMBER}s +{NUMBER} checkpoints/s +{NUMBER} requests/s  peak RSS +{NUMBER} MiB  "
        r"target >= 15,000/s and >= 5% of the raw driver into SQLite: (met|NOT MET)",
        rf"{NUMBER}% of the raw driver's {NUMBER} rows/s in 1",
        rf"runs: {NUMBER}s, {NUMBER}s, {NUMBER}s",
        rf"kept responses: {NUMBER} stored bytes per checkpoint  target <= 29: (met|NOT MET)",
        # 1 + 2 projects + 4 jobs; the floor at the sync's pace, then at the API's limit
        rf"3 sqlite +{NUMBER}s for 7 requests, floor at 95/s {NUMBER}s: {NUMBER}x "
        rf"\(at the API's {NUMBER}/s {NUMBER}s: {NUMBER}x\), 0 429s",
        *(
            rf"4 sqlite +{NUMBER}s for 3 requests \({night} night\), {NUMBER}% of the full sync's {NUMBER}s, "
            "0 new bodies kept"
            for night in ("first", "next")
        ),
        # the archive synced after each of three nights of change; the third, an ordinary one, shown
        rf"4b sqlite +{NUMBER}s for {NUMBER} requests, {NUMBER}% of the full sync's {NUMBER}s \(Night 3: ",
        r"5\. Memory: sync of one job with 5 checkpoints on loopback",
        *(
            rf"sqlite +{run} +{NUMBER}s  peak RSS +{NUMBER} MiB  target < {target} MiB: (met|NOT MET)"
            for run in ("first", "second")
            for target in (150, 250)
        ),
        r"5b\. Memory: the same with one listing of 7 checkpoints",
        rf"Benchmark took {NUMBER}s\.",
        r"2b\. Where the time went",
        r"\(a thread is seen when the sampler gets the GIL",
        rf"sqlite: the profiled process took {NUMBER}s, {NUMBER}x the unprofiled one; the sync command {NUMBER}s",
        *(rf"{re.escape(phase)} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}" for phase in phases.PHASES),
        rf"writer \(main thread\) busy {NUMBER}s of {NUMBER}s wall: {NUMBER}%; [1-8] fetch workers busy",
        rf"on a core: writer {NUMBER}s \({NUMBER}% of the wall; busy but not running {NUMBER}s\), "
        rf"fetch workers {NUMBER}s, other threads {NUMBER}s; the whole process {NUMBER}s of CPU in {NUMBER}s",
        rf"History: appended this run's figures to {re.escape(str(history))}\.",
    ]
    for figure in figures:
        assert re.search(figure, out), f"no line matches {figure!r} in:\n{out}"
    assert not list(where.iterdir())  # it left nothing where it ran

    (line,) = history.read_text().splitlines()
    entry = json.loads(line)
    assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"])
    assert entry["cores"] == os.cpu_count() and entry["python"] == ".".join(map(str, sys.version_info[:3]))
    assert entry["options"]["jobs"] == 4 and entry["options"]["postgresql"] is False
    figures_of = entry["figures"]
    assert figures_of["organisation"] == {"projects": 2, "jobs": 4, "checkpoints": 12}
    assert set(figures_of["write_path"]["sqlite"]) == {"first load", "10% rows changed"}
    assert figures_of["full_sync"]["sqlite"]["checkpoints_per_s"] > 0
    raw = figures_of["write_path"]["sqlite"]["first load"]["raw_rows_per_s"]
    share = figures_of["full_sync"]["sqlite"]["share_of_raw_driver"]
    # Of the rate unrounded: 12 checkpoints in a fraction of a second round to whole ones per second coarsely.
    rate = figures_of["organisation"]["checkpoints"] / figures_of["full_sync"]["sqlite"]["seconds"]
    assert share == pytest.approx(rate / raw, rel=0.01)
    runs = figures_of["full_sync"]["sqlite"]["runs_seconds"]
    assert len(runs) == 3 and runs == sorted(runs) and figures_of["full_sync"]["sqlite"]["seconds"] == runs[1]
    assert (
        figures_of["paced"]["sqlite"]["requests"] == 7
        and figures_of["unchanged_night"]["sqlite"]["requests"] == 3
        and figures_of["next_unchanged_night"]["sqlite"]["requests"] == 3
    )
    assert figures_of["one_job"]["sqlite"]["second"]["peak_rss_mib"] > 0
    assert figures_of["large_listing"]["sqlite"]["first"]["checkpoints"] == 7
    assert figures_of["full_sync"]["sqlite"]["kept_bytes_per_checkpoint"] > 0
    assert figures_of["unchanged_night"]["sqlite"]["new_bodies"] == 0
    assert (
        figures_of["changed_night"]["sqlite"]["night"] == 3
        and figures_of["changed_night"]["sqlite"]["requests"] > 3
    )
    profiled = figures_of["phases"]["sqlite"]
    # Sampled: a sync this small may leave one of the writer's phases without a sample (seen under load).
    assert set(profiled["seconds"][phases.WRITER]) & {phases.EXECUTE, phases.ROWS}
    assert 0 < profiled["writer_busy_share"] <= 1.05


def test_the_benchmarks_help_names_its_history_options() -> None:
    from click.testing import CliRunner

    from archiver.bench.__main__ import main

    result = CliRunner().invoke(main, ["--help"])
    assert "--no-history" in result.output and "benchmarks/history.jsonl" in result.output


@pytest.mark.parametrize("kind", KINDS)
def test_an_unchanged_night_may_read_again_only_the_jobs_due_for_their_weekly_re_read(
    kind: str, tmp_path: Path
) -> None:
    """The benchmark's nights expect 1 + projects requests, and one more per job whose re-read came due."""
    spec = spec_for(4, 3, 2, seed=1)
    with databases(kind, tmp_path) as new_database, fake_server(spec) as server:
        url = new_database()
        run_sync(server, url, *LOOPBACK_OPTIONS)
        read = read_times(url)
        night = run_sync(server, url, *LOOPBACK_OPTIONS)
        assert len(read) == 4 and all(read_at is not None for read_at in read.values())
        # The projects and their job lists, and the checkpoints of a job only when its re-read came due
        # between the two runs (read seconds apart: hardly ever).
        assert night.requests == 1 + spec.projects + due_for_reread(url, read)
        # Had one been read 8 days ago and another never, both were due, whatever their ids.
        first, second, *_ = sorted(read)
        read_first = read[first]
        assert read_first is not None
        earlier = read | {first: read_first - timedelta(days=8), second: None}
        assert due_for_reread(url, earlier) == 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_profiled_sync_says_where_its_time_went_by_phase_and_thread(kind: str, tmp_path: Path) -> None:
    spec = spec_for(6, 20, 3, seed=1)
    with databases(kind, tmp_path) as new_database, fake_server(spec) as server:
        breakdown = profile_sync(server, new_database(), "cprofile", *LOOPBACK_OPTIONS)
    assert breakdown.threads[phases.WRITER] == 1
    assert 1 <= breakdown.threads[phases.FETCHERS] <= 8
    writer, fetchers = breakdown.seconds[phases.WRITER], breakdown.seconds[phases.FETCHERS]
    # The writer writes; the fetchers ask, parse, check and keep the answers.
    assert writer[phases.EXECUTE] > 0 and writer[phases.ROWS] > 0 and writer[phases.DIFF] > 0
    for phase in (phases.HTTP, phases.PARSE, phases.NORMALIZE, phases.KEPT, phases.MASK):
        assert fetchers[phase] > 0, phase
    # The main thread's time, busy or waiting, is the profiled span; each worker lived within it.
    main_thread = breakdown.busy(phases.WRITER) + breakdown.of(phases.WRITER, phases.WAIT)
    assert main_thread == pytest.approx(breakdown.wall_seconds, rel=0.05)
    workers = breakdown.busy(phases.FETCHERS) + breakdown.of(phases.FETCHERS, phases.WAIT)
    assert 0 < workers <= breakdown.threads[phases.FETCHERS] * breakdown.wall_seconds * 1.05
    lines = phases.table(breakdown)
    assert [line.split("  ")[0] for line in lines[1:-2]] == [*phases.PHASES, phases.WAIT]
    assert_ran_within_the_wall(breakdown)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_sampled_sync_says_where_its_time_went_by_phase_and_thread(kind: str, tmp_path: Path) -> None:
    spec = spec_for(20, 200, 10, seed=1)  # 4,000 checkpoints: enough samples for the writer's phases
    with databases(kind, tmp_path) as new_database, fake_server(spec) as server:
        breakdown = profile_sync(server, new_database(), "sample", *LOOPBACK_OPTIONS)
    assert breakdown.threads[phases.WRITER] == 1
    assert 1 <= breakdown.threads[phases.FETCHERS] <= 8
    assert set(breakdown.seconds[phases.WRITER]) <= {*phases.PHASES, phases.WAIT}
    assert breakdown.of(phases.WRITER, phases.EXECUTE) + breakdown.of(phases.WRITER, phases.ROWS) > 0
    assert breakdown.of(phases.FETCHERS, phases.HTTP) > 0
    # Every sample of the main thread went somewhere: its total is the sampled span, less the samples a
    # starved sampler missed at the end.
    main_thread = breakdown.busy(phases.WRITER) + breakdown.of(phases.WRITER, phases.WAIT)
    assert 0.5 * breakdown.wall_seconds <= main_thread <= breakdown.wall_seconds + 0.05
    assert_ran_within_the_wall(breakdown)


def assert_ran_within_the_wall(breakdown: phases.Breakdown) -> None:
    """The threads' time on a core: the writer's within the profiled span, every role's within the process's."""
    ran = breakdown.cpu_seconds
    assert 0 < ran[phases.WRITER] <= breakdown.wall_seconds * 1.05
    assert ran[phases.FETCHERS] > 0
    # The process's own account also has the profiler and what threads ran before their last reading.
    assert sum(ran.values()) <= breakdown.process_cpu_seconds * 1.05 + 0.2


def test_phases_are_named_by_module_and_function_and_builtins_by_their_caller() -> None:
    site = "/venv/lib/python3.11/site-packages"
    assert phases.phase_of(("/src/archiver/client.py", 1, "_send")) == phases.HTTP
    assert phases.phase_of((f"{site}/httpcore/_sync/connection.py", 1, "handle_request")) == phases.HTTP
    assert phases.phase_of(("/src/archiver/answer.py", 1, "json")) == phases.PARSE
    assert phases.phase_of(("/usr/lib/python3.11/json/decoder.py", 1, "raw_decode")) == phases.PARSE
    assert phases.phase_of(("/src/archiver/normalize.py", 1, "checkpoint_row")) == phases.NORMALIZE
    assert phases.phase_of(("/src/archiver/responses.py", 1, "of")) == phases.KEPT
    assert phases.phase_of(("~", 0, "<built-in method zlib.compress>")) == phases.KEPT
    assert phases.phase_of(("/src/archiver/versioning.py", 1, "save_versions")) == phases.DIFF
    assert phases.phase_of(("~", 0, "<method 'executemany' of 'sqlite3.Cursor' objects>")) == phases.EXECUTE
    assert phases.phase_of((f"{site}/sqlalchemy/sql/compiler.py", 1, "visit_insert")) == phases.ROWS
    assert phases.phase_of(("/src/archiver/sync/checkpoints.py", 1, "archive_checkpoints")) == phases.OTHER
    assert phases.phase_of(("~", 0, "<method 'get' of 'dict' objects>")) is None  # its caller's

    # A builtin's own time goes to its callers' phases, in proportion to each call edge's time.
    get = ("~", 0, "<method 'get' of 'dict' objects>")
    normalize = ("/src/archiver/normalize.py", 1, "checkpoint_row")
    upsert = ("/src/archiver/db.py", 1, "upsert")
    stats = {
        get: (10, 10, 3.0, 3.0, {normalize: (5, 5, 2.0, 2.0), upsert: (5, 5, 1.0, 1.0)}),
        normalize: (1, 1, 1.0, 3.0, {}),
        upsert: (1, 1, 0.5, 1.5, {}),
    }
    into: dict[str, float] = defaultdict(float)
    phases.attribute(stats, into)
    assert into == pytest.approx({phases.NORMALIZE: 3.0, phases.ROWS: 1.5})


def test_a_history_line_names_the_commit_the_run_began_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """A benchmark takes minutes: a commit made meanwhile was not measured, and its line must not claim it."""
    from archiver.bench import history

    heads = iter(["a" * 40, "b" * 40])
    monkeypatch.setattr(history, "_git", lambda *args: next(heads) if args[0] == "rev-parse" else "")
    began = history.source()
    entry = history.record({"jobs": 4}, {"full_sync": {}}, began)  # "b" landed as the run went on
    assert entry["commit"] == "a" * 40 and entry["uncommitted_changes"] is False
    assert entry["options"] == {"jobs": 4} and entry["figures"] == {"full_sync": {}}
