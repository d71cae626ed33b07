"""`archiver fake-api`: serve a generated organisation for trials, tests and benchmarks."""

from __future__ import annotations

import click

from archiver import logs
from archiver.commands.shared import logging_options
from archiver.fake_api.generate import SPEC_ERAS


@click.command(name="fake-api")
@logging_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8008, show_default=True, help="Port (0: any free port)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated organisation.")
@click.option(
    "--spec-era",
    type=click.Choice(sorted(SPEC_ERAS)),
    default="D",
    show_default=True,
    help="Serve jobs shaped by this era of the published spec: A (2026-03), B adds priority, "
    "C availability_model, D node_count.",
)
@click.option(
    "--projects", type=click.IntRange(0), default=3, show_default=True, help="Projects to generate."
)
@click.option(
    "--jobs",
    "jobs_per_project",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Jobs per project.",
)
@click.option(
    "--checkpoints",
    "checkpoints_per_job",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Checkpoints per job.",
)
@click.option(
    "--night",
    type=click.IntRange(0, 365),
    default=0,
    show_default=True,
    help="Serve the organisation as it is after this many nights: jobs finish, checkpoints come and go, "
    "night 1 renames a project and night 2 deletes one. POST /__fake__/advance lets one more pass.",
)
@click.option("--api-key", default=None, help="Key the server accepts (default: the fake's built-in key).")
@click.option(
    "--latency-ms",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Delay every response this long.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(0.1),
    default=None,
    help="Answer 429 above this many requests per second.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests that get a transient fault (429, 5xx, reset, delay, truncation).",
)
def fake_api(
    host: str,
    port: int,
    seed: int,
    spec_era: str,
    projects: int,
    jobs_per_project: int,
    checkpoints_per_job: int,
    night: int,
    api_key: str | None,
    latency_ms: float,
    rate_limit: float | None,
    fault_rate: float,
) -> None:
    """Serve a fake Baseten API for trials and tests.

    A generated organisation, for trials, tests and benchmarks.

    \b
    Exit status: 0 never, as it serves until stopped; 130 stopped by Ctrl-C or SIGTERM;
    2 usage error, or it cannot listen on --host and --port.

    \b
    Example:
      archiver fake-api --port 8008 &
      BASETEN_API_URL=http://127.0.0.1:8008 BASETEN_API_KEY=fake-baseten-key archiver sync
      curl -X POST -H 'Authorization: Api-Key fake-baseten-key' http://127.0.0.1:8008/__fake__/advance
    """
    from archiver import fake_api as fake

    spec = fake.OrgSpec(
        seed=seed,
        spec_era=spec_era,
        projects=projects,
        jobs_per_project=jobs_per_project,
        checkpoints_per_job=checkpoints_per_job,
    )
    server = fake.FakeBaseten(
        spec,
        api_key=api_key or fake.DEFAULT_API_KEY,
        latency_ms=latency_ms,
        rate_limit_rps=rate_limit,
        faults=fake.Faults(seed=seed, rate=fault_rate) if fault_rate else None,
    )
    fake.play_until(server, night)
    fake.serve_forever(
        server,
        host,
        port,
        ready=lambda url: logs.say(
            f"Fake Baseten API on {url}{f', night {night}' if night else ''} ({fake.DEFAULT_API_KEY if api_key is None else 'your --api-key'}"
            " as the key). Ctrl-C stops it.",
            err=True,
            event="listening",
            url=url,
        ),
    )
