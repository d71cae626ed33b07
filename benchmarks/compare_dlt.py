"""Side by side with dlt: the archiver and dlt's rest_api source load the same fake organisation.

    .venv/bin/pip install -e '.[compare]'
    .venv/bin/python benchmarks/compare_dlt.py --postgres-url postgresql://postgres@127.0.0.1/postgres

One fake API process (`archiver.bench.fake_server`) serves a generated organisation, every job terminal.
For each round and database, each tool makes a first load into a fresh database, then an unchanged
reload (the same command again, same data, same destination); the order of the tools alternates by round.
Both run as subprocesses through the benchmark's slim launcher, so both pay interpreter start-up and both
are timed the same way. The archiver runs `archiver sync --migrate` with the loopback settings that
`python -m archiver.bench` uses; dlt runs `benchmarks/dlt_load.py` (rest_api, merge on primary keys).
After every run the rows each left are counted and must agree with the organisation.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from archiver.bench.__main__ import LOOPBACK_OPTIONS, spec_for, verdict
from archiver.bench.fake_server import FakeServer, fake_server
from archiver.bench.runs import as_installed, launch_timed, run_sync
from archiver.bench.scratch import scratch_databases
from archiver.fake_api import DEFAULT_API_KEY

HERE = Path(__file__).resolve().parent
DLT_LOAD = HERE / "dlt_load.py"
DATASET = "baseten"  # dlt_load.DATASET; not imported, so this process never imports dlt
TOOLS = ("archiver", "dlt")
RUNS = ("first load", "unchanged reload")
TARGETS = {"first load": 5.0, "unchanged reload": 40.0}  # dlt time / archiver time, from issue 21


@dataclass(frozen=True)
class Run:
    """One load by one tool, as the launcher and the fake API saw it."""

    seconds: float
    peak_rss_mib: float
    requests: int


def say(text: str = "") -> None:
    click.echo(text)


def archiver_load(server: FakeServer, database_url: str, workdir: Path) -> Run:
    """Run `archiver sync --migrate` with the loopback settings, timed by the launcher."""
    run = run_sync(server, database_url, *LOOPBACK_OPTIONS)
    return Run(run.seconds, run.peak_rss_mib, run.requests)


def dlt_load(server: FakeServer, database_url: str, workdir: Path) -> Run:
    """Run `benchmarks/dlt_load.py` (its pipeline state kept in `workdir`), timed by the launcher."""
    server.reset()
    env = dict(os.environ) | {"RUNTIME__DLTHUB_TELEMETRY": "false"}
    command = [sys.executable, str(DLT_LOAD), server.url, DEFAULT_API_KEY, database_url, str(workdir)]
    launched = launch_timed(command, env, "dlt_load.py")
    return Run(launched.seconds, launched.peak_rss_mib, server.metrics().requests)


LOADERS: dict[str, Callable[[FakeServer, str, Path], Run]] = {"archiver": archiver_load, "dlt": dlt_load}


def counts(tool: str, database_url: str) -> tuple[int, int, int]:
    """Projects, jobs and checkpoints the tool left in the database: the archiver's own tables, or
    dlt's in its dataset (a schema on PostgreSQL, a file attached beside the SQLite one)."""
    engine = sa.create_engine(database_url)
    schema = None
    if tool == "dlt":
        schema = DATASET
        if engine.dialect.name == "sqlite":
            main = Path(engine.url.database or "")
            attached = main.with_name(f"{main.stem}__{DATASET}.db")

            @sa.event.listens_for(engine, "connect")
            def attach(connection: Any, _: Any) -> None:
                connection.execute(f"ATTACH DATABASE '{attached}' AS {DATASET}")

    try:
        with engine.connect() as connection:
            found = []
            for name in ("training_projects", "training_jobs", "checkpoints"):
                table = sa.table(name, schema=schema)
                found.append(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
            return found[0], found[1], found[2]
    finally:
        engine.dispose()


def row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        cell.ljust(w) if i < 2 else cell.rjust(w)
        for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--projects", type=click.IntRange(1), default=20, show_default=True)
@click.option("--jobs", type=click.IntRange(1), default=50, show_default=True, help="Jobs per project.")
@click.option(
    "--checkpoints", type=click.IntRange(0), default=50, show_default=True, help="Checkpoints per job."
)
@click.option(
    "--postgres-url",
    envvar="ARCHIVER_BENCH_POSTGRES_URL",
    show_envvar=True,
    default=None,
    help="A PostgreSQL server to create (and drop) scratch databases on; unset: SQLite only.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Rounds; the tools' order alternates, and each figure is the median over the rounds.",
)
@click.option("--seed", type=int, default=1, show_default=True)
def main(
    projects: int, jobs: int, checkpoints: int, postgres_url: str | None, rounds: int, seed: int
) -> None:
    """Load the same fake organisation with the archiver and with dlt; print dlt's time over the archiver's."""
    try:
        dlt_version = metadata.version("dlt")
    except metadata.PackageNotFoundError:
        raise click.ClickException("dlt is not installed: pip install -e '.[compare]'") from None
    spec = spec_for(projects * jobs, checkpoints, jobs, seed)
    kinds = ["sqlite", "postgresql"] if postgres_url else ["sqlite"]
    seen: dict[tuple[str, str, str], list[Run]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="archiver-dlt-") as workdir,
        scratch_databases(postgres_url, Path(workdir), prefix="archiver_dlt_") as new_database,
        fake_server(spec) as server,
    ):
        organisation = server.metrics().checkpoints
        expected = (spec.projects, spec.projects * spec.jobs_per_project, organisation)
        say(
            f"Organisation: {spec.projects} projects x {spec.jobs_per_project} jobs x up to "
            f"{checkpoints} checkpoints = {organisation:,} checkpoints (seed {seed}, every job terminal; "
            "a failed job has fewer), served on loopback with no latency."
        )
        say(
            f"archiver: `archiver sync --migrate {' '.join(LOOPBACK_OPTIONS)}`; dlt {dlt_version}: "
            "rest_api source, write_disposition merge on primary keys (benchmarks/dlt_load.py)."
        )
        if not postgres_url:
            say("PostgreSQL skipped: pass --postgres-url or set ARCHIVER_BENCH_POSTGRES_URL.")
        as_installed()
        say(
            "The archiver's modules and revisions are compiled to bytecode first, as installing it does (dlt's are)."
        )
        for number in range(1, rounds + 1):
            order = TOOLS if number % 2 else TOOLS[::-1]
            for kind in kinds:
                for tool in order:
                    url = new_database(kind)
                    state = Path(workdir) / f"dlt-state-{number}-{kind}-{tool}"
                    for run_name in RUNS:
                        run = LOADERS[tool](server, url, state)
                        found = counts(tool, url)
                        if found != expected:
                            raise click.ClickException(
                                f"{tool} left {found} (projects, jobs, checkpoints) in {kind} after its "
                                f"{run_name}, not the organisation's {expected}"
                            )
                        seen.setdefault((kind, run_name, tool), []).append(run)
                        say(
                            f"  round {number} {kind:<10} {tool:<8} {run_name:<16} {run.seconds:7.2f}s "
                            f"{run.requests:5} requests  peak RSS {run.peak_rss_mib:5.0f} MiB  "
                            f"rows: {found[0]} projects, {found[1]} jobs, {found[2]:,} checkpoints"
                        )
    widths = [10, 16, 11, 8, 12, 7, 8, 17, 16]
    say(f"\nMedian of {rounds} round(s); ratio = dlt seconds / archiver seconds")
    head = ["database", "run", "archiver s", "dlt s", "dlt/archiver", "target", "", "requests arch/dlt"]
    say(row([*head, "peak MiB arch/dlt"], widths))
    for kind in kinds:
        for run_name in RUNS:
            ours, theirs = (seen[(kind, run_name, tool)] for tool in TOOLS)
            a, d = (statistics.median(r.seconds for r in runs) for runs in (ours, theirs))
            ratio = d / a
            target = TARGETS[run_name]
            say(
                row(
                    [
                        kind,
                        run_name,
                        f"{a:.2f}",
                        f"{d:.2f}",
                        f"{ratio:.1f}x",
                        f">= {target:g}x",
                        verdict(ratio >= target),
                        f"{ours[0].requests} / {theirs[0].requests}",
                        f"{statistics.median(r.peak_rss_mib for r in ours):.0f} / "
                        f"{statistics.median(r.peak_rss_mib for r in theirs):.0f}",
                    ],
                    widths,
                )
            )


if __name__ == "__main__":
    main()
