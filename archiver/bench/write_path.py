"""Time the write path alone: our checkpoint upsert beside a raw-driver baseline on the same rows.

Both sides start from the same normalized rows and end with the same table contents. Ours is
`store.save_checkpoint_listings`, exactly as the sync's writer calls it (batches of whole jobs, one
transaction each); the baseline is the fastest plain use of the driver: `sqlite3` executemany
with `ON CONFLICT`, or psycopg `COPY` into a temporary table then `INSERT ... SELECT ... ON CONFLICT`,
in one transaction. Pass 2 re-writes the same keys a day later with every tenth row changed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from archiver import db, migrate, store
from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.normalize import CheckpointListing, Row, checkpoint_listing
from archiver.schema import sqlite_text
from archiver.sync import DEFAULT_BATCH_ROWS

FIRST_NIGHT = datetime(2026, 2, 1, 3, 0, tzinfo=UTC)
# The baseline writes what ours writes: the archive's checkpoint values (a fresh load has no deletions).
VALUES = tuple(name for name in store.CHECKPOINT_VALUES if name != "deleted_at")
# A changed row's state is valid from the night that saw it (ours also keeps the old state in history,
# which the baseline does not: pass 2 flatters the baseline).
COLUMNS = ("training_job_id", "checkpoint_id", *VALUES, "first_seen_at", "last_seen_at", "valid_from")


@dataclass(frozen=True)
class PassTimes:
    """Rows written and seconds taken by one pass of one method."""

    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


@dataclass(frozen=True)
class WritePathResult:
    """Ours and the baseline, first load and second pass."""

    ours: tuple[PassTimes, PassTimes]
    raw: tuple[PassTimes, PassTimes]


def pages_for(spec: OrgSpec) -> list[CheckpointListing]:
    """Normalize every job of a generated organisation, as the fetchers would."""
    fake = FakeBaseten(spec)
    return [
        checkpoint_listing(
            {"training_job": fake.job(job_id), "checkpoints": fake.checkpoints(job_id)}, p, job_id
        )
        for p in fake.project_ids()
        for job_id in fake.job_ids(p)
    ]


def changed(pages: Sequence[CheckpointListing], every: int = 10) -> list[CheckpointListing]:
    """The same pages with every `every`-th checkpoint grown by a byte."""
    result, index = [], 0
    for page in pages:
        rows = []
        for row in page.checkpoints:
            if index % every == 0:
                row = {**row, "size_bytes": row["size_bytes"] + 1}
            rows.append(row)
            index += 1
        result.append(replace(page, checkpoints=rows))
    return result


def batches(
    pages: Sequence[CheckpointListing], rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[list[CheckpointListing]]:
    """Group whole jobs the way the sync's writer does."""
    batch: list[CheckpointListing] = []
    count = 0
    for page in pages:
        batch.append(page)
        count += len(page.checkpoints) + 1
        if count >= rows:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


def prepare(engine: Engine, pages: Sequence[CheckpointListing]) -> dict[str, int]:
    """Migrate an empty database and archive what checkpoints refer to; return LoRA config ids."""
    migrate.upgrade(engine)
    with engine.begin() as connection:
        for project_id in sorted({page.project_id for page in pages}):
            jobs = [page.job for page in pages if page.project_id == project_id]
            project = {**dict.fromkeys(store.PROJECTS.values), "id": project_id}
            store.save_listing(connection, project, jobs, FIRST_NIGHT)
        configs: dict[str, Row] = {}
        for page in pages:
            configs.update(page.lora_configs)
        return store.save_lora_configs(connection, configs, FIRST_NIGHT)


def ours(engine: Engine, pages: Sequence[CheckpointListing], now: datetime) -> PassTimes:
    """Time `store.save_checkpoint_listings` over batches of whole jobs."""
    started = time.perf_counter()
    for batch in batches(pages):
        with engine.begin() as connection:
            store.save_checkpoint_listings(connection, batch, now)
    return PassTimes(sum(len(p.checkpoints) for p in pages), time.perf_counter() - started)


def _records(pages: Sequence[CheckpointListing], config_ids: dict[str, int]) -> Iterator[Row]:
    for page in pages:
        for listed in page.checkpoints:
            row = {key: value for key, value in listed.items() if key != "lora_config_sha256"}
            sha = listed["lora_config_sha256"]
            row["lora_adapter_config_id"] = config_ids[sha] if sha else None
            yield row


def raw_sqlite(
    path: str, pages: Sequence[CheckpointListing], config_ids: dict[str, int], now: datetime
) -> PassTimes:
    """Time plain `sqlite3` executemany `INSERT ... ON CONFLICT DO UPDATE`, one transaction."""
    names = ", ".join(COLUMNS)
    marks = ", ".join("?" * len(COLUMNS))
    updates = ", ".join(f"{name} = excluded.{name}" for name in (*VALUES, "last_seen_at", "valid_from"))
    distinct = " OR ".join(f"checkpoints.{name} IS NOT excluded.{name}" for name in VALUES)
    sql = (  # column names are this module's constants
        f"INSERT INTO checkpoints ({names}) VALUES ({marks}) ON CONFLICT (training_job_id, checkpoint_id) "  # noqa: S608
        f"DO UPDATE SET {updates} WHERE {distinct}"
    )
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    seen = sqlite_text(now)
    started = time.perf_counter()
    connection.execute("BEGIN")
    params = [
        (
            r["training_job_id"],
            r["checkpoint_id"],
            sqlite_text(r["created_at"]),
            r["checkpoint_type"],
            r["base_model"],
            r["lora_adapter_config_id"],
            r["size_bytes"],
            r["sync_status"],
            None if r["extra"] is None else json.dumps(r["extra"]),
            r["target"],
            r["training_job_id_inferred"],
            seen,
            seen,
            seen,
        )
        for r in _records(pages, config_ids)
    ]
    connection.executemany(sql, params)
    connection.execute("COMMIT")
    seconds = time.perf_counter() - started
    connection.close()
    return PassTimes(len(params), seconds)


def raw_postgresql(
    url: str, pages: Sequence[CheckpointListing], config_ids: dict[str, int], now: datetime
) -> PassTimes:
    """Time psycopg `COPY` into a temporary table, then one `INSERT ... SELECT ... ON CONFLICT`."""
    import psycopg
    from psycopg.types.json import Jsonb

    names = ", ".join(COLUMNS)
    updates = ", ".join(f"{name} = excluded.{name}" for name in (*VALUES, "last_seen_at", "valid_from"))
    distinct = f"({', '.join(f'checkpoints.{n}' for n in VALUES)}) IS DISTINCT FROM ({', '.join(f'excluded.{n}' for n in VALUES)})"
    dsn = db.parse_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    count = 0
    with psycopg.connect(dsn) as connection:
        started = time.perf_counter()
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {names} FROM checkpoints WITH NO DATA"  # noqa: S608
            )
            with cursor.copy(f"COPY stage ({names}) FROM STDIN") as copy:
                for r in _records(pages, config_ids):
                    copy.write_row(
                        (
                            r["training_job_id"],
                            r["checkpoint_id"],
                            r["created_at"],
                            r["checkpoint_type"],
                            r["base_model"],
                            r["lora_adapter_config_id"],
                            r["size_bytes"],
                            r["sync_status"],
                            None if r["extra"] is None else Jsonb(r["extra"]),
                            r["target"],
                            r["training_job_id_inferred"],
                            now,
                            now,
                            now,
                        )
                    )
                    count += 1
            cursor.execute(
                f"INSERT INTO checkpoints ({names}) SELECT {names} FROM stage "  # noqa: S608
                f"ON CONFLICT (training_job_id, checkpoint_id) DO UPDATE SET {updates} WHERE {distinct}"
            )
        seconds = time.perf_counter() - started
    return PassTimes(count, seconds)


def measure(url: str, raw_url: str, pages: Sequence[CheckpointListing]) -> WritePathResult:
    """Run both passes of ours on `url` and of the baseline on `raw_url` (two empty databases)."""
    second = changed(pages)
    later = FIRST_NIGHT + timedelta(days=1)
    engine = db.make_engine(url)
    raw_engine = db.make_engine(raw_url)
    try:
        prepare(engine, pages)
        config_ids = prepare(raw_engine, pages)
        if engine.dialect.name == "sqlite":
            path = raw_engine.url.database
            assert path is not None
            raw_engine.dispose()

            def raw(pages: Sequence[CheckpointListing], now: datetime) -> PassTimes:
                return raw_sqlite(path, pages, config_ids, now)

        else:
            raw_engine.dispose()

            def raw(pages: Sequence[CheckpointListing], now: datetime) -> PassTimes:
                return raw_postgresql(raw_url, pages, config_ids, now)

        first = (ours(engine, pages, FIRST_NIGHT), raw(pages, FIRST_NIGHT))
        again = (ours(engine, second, later), raw(second, later))
    finally:
        engine.dispose()
        raw_engine.dispose()
    return WritePathResult(ours=(first[0], again[0]), raw=(first[1], again[1]))
