"""`python -m archiver.bench`: measure the write path and whole syncs; print each figure beside its bound."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from archiver.bench.fake_server import fake_server
from archiver.bench.runs import SyncRun, run_sync
from archiver.bench.scratch import scratch_databases
from archiver.bench.write_path import measure, pages_for
from archiver.client import DEFAULT_CONCURRENCY, DEFAULT_MAX_RPS
from archiver.fake_api import OrgSpec

LOOPBACK_OPTIONS = ("--max-rps", "100000", "--concurrency", "8")
ONE_JOB_TARGET_MIB = 200


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def spec_for(jobs: int, checkpoints: int, jobs_per_project: int, seed: int) -> OrgSpec:
    projects = max(1, -(-jobs // jobs_per_project))
    return OrgSpec(
        seed=seed,
        projects=projects,
        jobs_per_project=min(jobs, jobs_per_project),
        checkpoints_per_job=checkpoints,
        active_fraction=0.0,  # every job terminal: an unchanged night needs no checkpoint requests
    )


def say(text: str = "") -> None:
    click.echo(text)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--jobs", type=click.IntRange(1), default=2_000, show_default=True, help="Jobs in the organisation."
)
@click.option(
    "--checkpoints", type=click.IntRange(0), default=50, show_default=True, help="Checkpoints per job."
)
@click.option("--jobs-per-project", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--large-jobs",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Also sync an organisation of this many jobs on loopback for the memory figure (20000: 1M checkpoints).",
)
@click.option(
    "--one-job-checkpoints",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Checkpoints of the one job whose sync's peak RSS is measured (target < 200 MiB).",
)
@click.option(
    "--postgres-url",
    envvar="ARCHIVER_BENCH_POSTGRES_URL",
    show_envvar=True,
    default=None,
    help="A PostgreSQL server the benchmark may create (and drop) scratch databases on; unset: SQLite only.",
)
@click.option("--latency-ms", type=click.FloatRange(0), default=100.0, show_default=True)
@click.option("--rate-limit", type=click.FloatRange(1), default=100.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
def main(
    jobs: int,
    checkpoints: int,
    jobs_per_project: int,
    large_jobs: int,
    one_job_checkpoints: int,
    postgres_url: str | None,
    latency_ms: float,
    rate_limit: float,
    seed: int,
) -> None:
    """Benchmark the archiver against the fake API on loopback, into SQLite and PostgreSQL.

    \b
    Example (defaults: 2,000 jobs x 50 checkpoints, a few minutes on 2 cores):
      python -m archiver.bench --postgres-url postgresql://postgres@127.0.0.1/test
      python -m archiver.bench --large-jobs 20000     # adds the 1,000,000-checkpoint memory run
      python -m archiver.bench --one-job-checkpoints 100000 --jobs 10   # mostly the one-job memory figure
    """
    spec = spec_for(jobs, checkpoints, jobs_per_project, seed)
    kinds = ["sqlite", "postgresql"] if postgres_url else ["sqlite"]
    started = time.monotonic()
    pages = pages_for(spec)
    rows = sum(len(page.checkpoints) for page in pages)
    say(
        f"Organisation: {spec.projects} projects x {spec.jobs_per_project} jobs, {rows} checkpoints "
        f"(seed {seed}, every job terminal). Sync defaults: --concurrency {DEFAULT_CONCURRENCY} "
        f"--max-rps {DEFAULT_MAX_RPS:g}."
    )
    if not postgres_url:
        say("PostgreSQL skipped: pass --postgres-url or set ARCHIVER_BENCH_POSTGRES_URL.")
    with (
        tempfile.TemporaryDirectory(prefix="archiver-bench-") as workdir,
        scratch_databases(postgres_url, Path(workdir), prefix="archiver_bench_") as new_database,
    ):
        say("\n1. Write path: store.save_checkpoint_listings (batches of whole jobs) vs the raw driver")
        say(
            f"   {'database':<11}{'pass':<22}{'ours rows/s':>12}{'raw rows/s':>12}{'ratio':>7}  target >= 0.5x"
        )
        for kind in kinds:
            result = measure(new_database(kind), new_database(kind), pages)
            for index, label in enumerate(("1: first load", "2: 10% rows changed")):
                ours, raw = result.ours[index], result.raw[index]
                ratio = ours.rate / raw.rate
                say(
                    f"   {kind:<11}{label:<22}{ours.rate:>12,.0f}{raw.rate:>12,.0f}{ratio:>6.2f}x  {verdict(ratio >= 0.5)}"
                )
        del pages

        full: dict[str, SyncRun] = {}
        say(f"\n2. Full sync on loopback, no latency ({' '.join(LOOPBACK_OPTIONS)})")
        with fake_server(spec) as server:
            for kind in kinds:
                run = run_sync(server, new_database(kind), *LOOPBACK_OPTIONS)
                full[kind] = run
                rate = rows / run.seconds
                target = (
                    f"  target >= 10,000/s into SQLite: {verdict(rate >= 10_000)}" if kind == "sqlite" else ""
                )
                say(
                    f"   {kind:<11}{run.seconds:6.1f}s  {rate:>8,.0f} checkpoints/s  "
                    f"{run.requests / run.seconds:>6,.0f} requests/s  peak RSS {run.peak_rss_mib:5.1f} MiB{target}"
                )

        say(
            f"\n3. Full sync at {latency_ms:g} ms latency and a {rate_limit:g} requests/s limit, default settings"
        )
        say(
            f"4. Nightly sync of the unchanged organisation, default settings (target: 1 + {spec.projects} requests, < 5% of 3's wall time)"
        )
        with fake_server(spec, latency_ms=latency_ms, rate_limit=rate_limit) as server:
            for kind in kinds:
                url = new_database(kind)
                run = run_sync(server, url)
                floor = run.requests / rate_limit
                ratio = run.seconds / floor
                ok = ratio <= 1.15 and run.rate_limited == 0
                say(
                    f"   3 {kind:<11}{run.seconds:6.1f}s for {run.requests} requests, floor {floor:.1f}s: "
                    f"{ratio:.2f}x, {run.rate_limited} 429s, at most {run.max_in_one_second} in a second, "
                    f"{run.max_in_flight} in flight  target <= 1.15x, 0 429s: {verdict(ok)}"
                )
                night = run_sync(server, url)
                share = night.seconds / run.seconds
                ok = night.requests == 1 + spec.projects and share < 0.05
                say(
                    f"   4 {kind:<11}{night.seconds:6.2f}s for {night.requests} requests, "
                    f"{share:.1%} of the full sync's {run.seconds:.1f}s  {verdict(ok)}"
                )

        one_job = spec_for(1, one_job_checkpoints, 1, seed)
        say(f"\n5. Memory: sync of one job with {one_job_checkpoints:,} checkpoints on loopback")
        with fake_server(one_job) as server:
            for kind in kinds:
                run = run_sync(server, new_database(kind), *LOOPBACK_OPTIONS)
                ok = run.peak_rss_mib < ONE_JOB_TARGET_MIB
                say(
                    f"   {kind:<11}{run.seconds:6.1f}s  peak RSS {run.peak_rss_mib:5.1f} MiB  "
                    f"target < {ONE_JOB_TARGET_MIB} MiB: {verdict(ok)}"
                )

        if large_jobs:
            big = spec_for(large_jobs, checkpoints, jobs_per_project, seed)
            say(f"\n6. Memory: full sync of {large_jobs} jobs x {checkpoints} checkpoints on loopback")
            with fake_server(big) as server:
                for kind in kinds:
                    run = run_sync(server, new_database(kind), *LOOPBACK_OPTIONS)
                    ratio = run.peak_rss_mib / full[kind].peak_rss_mib
                    ok = run.peak_rss_mib < 200 and ratio <= 1.2
                    say(
                        f"   {kind:<11}{run.seconds:6.1f}s  {run.checkpoints / run.seconds:>8,.0f} checkpoints/s  "
                        f"peak RSS {run.peak_rss_mib:5.1f} MiB, {ratio:.2f}x the peak at {rows:,}  "
                        f"target < 200 MiB and <= 1.2x: {verdict(ok)}"
                    )
    say(f"\nBenchmark took {time.monotonic() - started:.0f}s.")


if __name__ == "__main__":
    main()
