"""A BI tool's time filter counts the same on SQLite as on PostgreSQL, over the same archive.

Superset, Metabase and Datasette filter with literals (`'2026-11-27 00:00:00.000000'`, with or
without the fraction) and with `datetime('now', ...)` / `now() - interval ...`. SQLite compares
text: timestamps stored as `2026-11-27T03:00:00.000000+00:00` put `T` after the literal's space,
and any bound on a stored day counted wrong ("checkpoints deleted in the last 7 days": 0 rows on
SQLite, 3,398 on PostgreSQL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from archiver import db, migrate
from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.sync import SyncOptions

from .support.databases import databases, scalar
from .support.fakes import sync
from .support.times import stopped

# Three nights at 03:00 UTC, the last one yesterday: bounds below fall on the stored days.
LAST = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0) - timedelta(days=1)
NIGHTS = [LAST - timedelta(days=2), LAST - timedelta(days=1), LAST]


def build(url: str) -> None:
    """The same three nights into `url`: checkpoints appear, and some are deleted each night."""
    fake = FakeBaseten(OrgSpec(seed=22, projects=2, jobs_per_project=3, checkpoints_per_job=6))
    engine = db.make_engine(url)
    try:
        migrate.upgrade(engine)
        for night, moment in enumerate(NIGHTS):
            if night:
                for job_id in fake.job_ids()[night::2]:
                    for checkpoint in fake.checkpoints(job_id)[:night]:
                        fake.delete_checkpoint(job_id, checkpoint["checkpoint_id"])
            options = SyncOptions(full=True, allow_mass_delete=True)
            assert sync(engine, fake, options, clock=stopped(moment)).exit_code == 0
    finally:
        engine.dispose()


def day(moment: datetime, hour: int, fraction: bool) -> str:
    text = moment.replace(hour=hour, minute=0).strftime("%Y-%m-%d %H:%M:%S")
    return text + ".000000" if fraction else text


def literal_filters() -> list[str]:
    """Filters as BI tools write them: bounds before, on and after the stored instants' days and hours.

    Superset writes the fraction (`.000000`) and may hit a stored instant exactly; a bound without
    the fraction (Datasette, typed by hand) is tried off the stored instants: on text, a stored
    `03:00:00.000000` is after `'... 03:00:00'`, the one case the README tells readers to avoid.
    """
    found = []
    for moment in NIGHTS:
        for hour, fraction in ((0, True), (0, False), (3, True), (12, True), (12, False)):
            bound = day(moment, hour, fraction)
            found += [
                f"deleted_at >= '{bound}'",
                f"deleted_at > '{bound}'",
                f"deleted_at < '{bound}'",
                f"deleted_at <= '{bound}'",
                f"first_seen_at > '{bound}'",
                f"last_seen_at = '{bound}'",
                f"last_seen_at BETWEEN '{bound}' AND '{day(moment + timedelta(days=1), hour, fraction)}'",
            ]
    return found


NOW_FILTERS = {  # "in the last N hours", as each database spells it
    hours: (
        f"deleted_at > datetime('now', '-{hours} hours')",
        f"deleted_at > now() - interval '{hours} hours'",
    )
    for hours in (12, 30, 40, 52, 60, 80)
}


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Engine]]:
    """The same archive on SQLite and on PostgreSQL."""
    workdir = tmp_path_factory.mktemp("twins")
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(databases(kind, workdir))() for kind in ("sqlite", "postgresql")]
        for url in urls:
            build(url)
        engines = [db.make_engine(url) for url in urls]
        for engine in engines:
            stack.callback(engine.dispose)
        yield engines[0], engines[1]


def test_literal_time_filters_count_the_same_on_both_databases(
    twins: tuple[Engine, Engine],
) -> None:
    sqlite, postgresql = twins
    differing, nonzero = [], 0
    for where in literal_filters():
        query = f"SELECT COUNT(*) FROM checkpoints WHERE {where}"
        counts = scalar(sqlite, query), scalar(postgresql, query)
        nonzero += counts[1] != 0
        if counts[0] != counts[1]:
            differing.append((where, *counts))
    assert not differing, differing
    assert nonzero > 20  # the filters find rows: equal zeros would prove nothing


def test_now_relative_filters_count_the_same_on_both_databases(
    twins: tuple[Engine, Engine],
) -> None:
    sqlite, postgresql = twins
    counts = {
        hours: (
            scalar(sqlite, f"SELECT COUNT(*) FROM checkpoints WHERE {on_sqlite}"),
            scalar(postgresql, f"SELECT COUNT(*) FROM checkpoints WHERE {on_postgresql}"),
        )
        for hours, (on_sqlite, on_postgresql) in NOW_FILTERS.items()
    }
    assert all(a == b for a, b in counts.values()), counts
    assert len({b for _, b in counts.values()}) >= 2, counts  # the bounds fall between the nights
