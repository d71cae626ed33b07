"""Writing rows: native upserts that insert, update in place, and leave unchanged rows alone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from archiver import store, versioning, views
from archiver.normalize import Where, checkpoint_listing, job_listing, project_row
from archiver.schema import UTCDateTime

from .support.archive_dump import stored_timestamps
from .support.databases import rows, scalar
from .support.orgs import archive_org
from .support.payloads import JOB, PROJECT, payload, project_for
from .support.times import utc

NIGHT_1 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
NIGHT_2 = NIGHT_1 + timedelta(days=1)
SQLITE_UTC = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def archive_job(engine: Engine, body: dict[str, Any], now: datetime) -> versioning.WriteCounts:
    page = checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    project = project_row({**PROJECT, "name": "qwen3 — ünïcødé '; DROP TABLE checkpoints; --"}, Where())
    with engine.begin() as connection:
        store.save_listing(connection, project, [page.job], now)
        return store.save_checkpoint_listings(connection, [page], now)[0]


def test_second_write_of_the_same_data_rewrites_no_checkpoint_row(archive: Engine) -> None:
    first = archive_job(archive, payload(), NIGHT_1)
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    every_column = "SELECT * FROM checkpoints ORDER BY id"
    before = rows(archive, every_column)
    second = archive_job(archive, payload(), NIGHT_2)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 2)
    assert rows(archive, every_column) == before
    # The sighting is recorded once for the job, and the view reads it from there (the facts
    # table holds what it computed at the end of a sync; this writes without one).
    assert utc(scalar(archive, "SELECT checkpoints_fetched_at FROM training_jobs")) == NIGHT_2
    seen = rows(archive, "SELECT first_seen_at, last_seen_at FROM checkpoint_facts_live")
    assert [(utc(first), utc(last)) for first, last in seen] == [(NIGHT_1, NIGHT_2)] * 2


def test_a_vanished_checkpoint_keeps_its_last_sighting(archive: Engine) -> None:
    archive_job(archive, payload(), NIGHT_1)
    archive_job(archive, payload(), NIGHT_2)
    night_3 = NIGHT_2 + timedelta(days=1)
    body = payload()
    del body["checkpoints"][0]
    counts = archive_job(archive, body, night_3)
    assert (counts.unchanged, counts.deleted) == (1, 1)
    gone = rows(
        archive,
        "SELECT last_seen_at, deleted_at FROM checkpoint_facts_live WHERE checkpoint_id = 'checkpoint-500'",
    )
    assert [(utc(last), utc(deleted)) for last, deleted in gone] == [(NIGHT_2, night_3)]
    kept = rows(
        archive,
        "SELECT last_seen_at, deleted_at FROM checkpoint_facts_live WHERE checkpoint_id = 'checkpoint-1000'",
    )
    assert kept == [(kept[0][0], None)] and utc(kept[0][0]) == night_3


def test_changed_values_are_updated_in_place_and_new_rows_inserted(archive: Engine) -> None:
    archive_job(archive, payload(), NIGHT_1)
    body = payload()
    body["checkpoints"][1]["sync_status"] = "COMPLETE"
    body["checkpoints"].append({**body["checkpoints"][0], "checkpoint_id": "checkpoint-1500"})
    counts = archive_job(archive, body, NIGHT_2)
    assert (counts.inserted, counts.updated, counts.unchanged) == (1, 1, 1)
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints") == 3
    assert (
        scalar(archive, "SELECT sync_status FROM checkpoints WHERE checkpoint_id = 'checkpoint-1000'")
        == "COMPLETE"
    )


def test_values_round_trip(archive: Engine) -> None:
    archive_job(archive, payload(), NIGHT_1)
    assert (
        scalar(archive, "SELECT size_bytes FROM checkpoints WHERE checkpoint_id = 'checkpoint-1000'")
        == 16388044800
    )
    assert (
        scalar(archive, "SELECT name FROM training_projects")
        == "qwen3 — ünïcødé '; DROP TABLE checkpoints; --"
    )
    assert rows(archive, "SELECT id, gpu_count, gpu_type FROM instance_types") == [
        ("H100:8x208x1800", 8, "H100")
    ]
    lora = rows(archive, "SELECT r, lora_alpha, lora_dropout, peft_type FROM lora_adapter_configs")
    assert lora == [(16, 32.0, 0.05, "LORA")]


def test_one_row_per_distinct_lora_config(archive: Engine) -> None:
    body = payload()
    first = body["checkpoints"][0]
    body["checkpoints"].append(
        {
            **first,
            "checkpoint_id": "checkpoint-700",
            "lora_adapter_config": dict(reversed(list(first["lora_adapter_config"].items()))),
        }
    )
    body["checkpoints"].append(
        {
            **first,
            "checkpoint_id": "checkpoint-800",
            "lora_adapter_config": {**first["lora_adapter_config"], "r": 64},
        }
    )
    archive_job(archive, body, NIGHT_1)
    assert scalar(archive, "SELECT COUNT(*) FROM lora_adapter_configs") == 2
    assert scalar(archive, "SELECT COUNT(DISTINCT lora_adapter_config_id) FROM checkpoints") == 2


def test_every_stored_timestamp_is_utc_in_one_fixed_width(archive: Engine) -> None:
    """Every timestamp, history tables included, is the UTC instant in one fixed width on SQLite,
    `2026-01-05 21:17:36.000000` (text order is time order, and BI tools' literals compare with it);
    PostgreSQL's are `timestamptz`."""
    archive_org(archive)
    stored = stored_timestamps(archive)
    assert "checkpoint_history.valid_to" in stored and "sync_runs.started_at" in stored
    values = [value for column in stored.values() for value in column if value is not None]
    assert len(values) > 400
    for value in values:
        if archive.dialect.name == "sqlite":
            assert isinstance(value, str) and SQLITE_UTC.fullmatch(value), value
            value = datetime.fromisoformat(value).replace(tzinfo=UTC)
        assert isinstance(value, datetime) and value.utcoffset() == timedelta(0), value


def test_pandas_reads_every_timestamp_as_utc(archive: Engine) -> None:
    """What an analyst does, as the README says: `pandas.read_sql(..., parse_dates={column: {"utc": True}})`
    on the archive, tables and views: every timestamp parses, as the UTC instant it is."""
    import pandas  # type: ignore[import-untyped]  # no stubs; read as an analyst would

    archive_org(archive)
    stored = stored_timestamps(archive)
    by_table: dict[str, list[str]] = {}
    for name in stored:
        table, column = name.split(".")
        by_table.setdefault(table, []).append(column)
    for view in views.metadata.sorted_tables:
        if found := [column.name for column in view.columns if isinstance(column.type, UTCDateTime)]:
            by_table[view.name] = found
    read = 0
    with archive.connect() as connection:
        source: Any = (
            connection.connection.dbapi_connection if archive.dialect.name == "sqlite" else connection
        )
        for table, columns in sorted(by_table.items()):
            quoted = ", ".join(f'"{column}"' for column in columns)
            utc = {column: {"utc": True} for column in columns}
            frame = pandas.read_sql_query(f'SELECT {quoted} FROM "{table}"', source, parse_dates=utc)
            for column in (
                column for column in columns if frame[column].notna().any()
            ):  # all NULL: no zone to read
                assert (
                    str(frame[column].dtype).startswith("datetime64[") and str(frame[column].dt.tz) == "UTC"
                ), (
                    table,
                    column,
                    frame[column].dtype,
                )
                read += int(frame[column].notna().sum())
    assert read > 400


def test_live_jobs_are_each_projects_jobs_not_marked_deleted(archive: Engine) -> None:
    org = archive_org(archive)
    projects = sorted({job.project["id"] for job in org.jobs.values()})
    assert org.deleted_project in projects and len(projects) >= 3
    with archive.connect() as connection:
        live = store.live_jobs(connection, [*projects, "no-such-project"])
    expected = {p: {j for j, job in org.jobs.items() if job.project["id"] == p} for p in projects}
    expected[org.deleted_project] = set()  # marked deleted with its project
    assert live == expected | {"no-such-project": set()}
    assert sum(map(len, live.values())) == scalar(
        archive, "SELECT count(*) FROM training_jobs WHERE deleted_at IS NULL"
    )


def test_an_instance_type_seen_this_run_as_it_is_is_not_written_again(archive: Engine) -> None:
    """Many listings name the same few instance types: a run touches each once, but writes a change."""
    writes: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if re.match(r"\s*(UPDATE|INSERT)\b.*\binstance_types\b", statement, re.S):
            writes.append(statement)

    def save(project_id: str, job_id: str, now: datetime, **instance_type: Any) -> None:
        project = project_for(project_id, project_id)
        job = {**JOB, "id": job_id, "training_project_id": project_id, "training_project": project}
        job["instance_type"] = {**JOB["instance_type"], **instance_type}
        listing = job_listing({"training_project": project, "training_jobs": [job]}, project_id)
        with archive.begin() as connection:
            store.save_listing(connection, listing.project, listing.jobs, now)

    sa.event.listen(archive, "before_cursor_execute", listen)
    save("p1", "j1", NIGHT_1)
    assert len(writes) == 1  # the insert
    save("p2", "j2", NIGHT_1)
    assert len(writes) == 1  # the same run, the same type: nothing
    save("p3", "j3", NIGHT_1, gpu_count=4)
    assert len(writes) == 2  # the same run, another description: written
    save("p1", "j1", NIGHT_2, gpu_count=4)
    assert len(writes) == 3  # the next run sees it: last_seen_at moves
    save("p2", "j2", NIGHT_2, gpu_count=4)
    assert len(writes) == 3
    seen = rows(archive, "SELECT gpu_count, first_seen_at, last_seen_at FROM instance_types")
    assert [(gpus, utc(first), utc(last)) for gpus, first, last in seen] == [(4, NIGHT_1, NIGHT_2)]


_INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.one_of(st.none(), st.timezones()),
)


@given(
    moment=_INSTANTS,
    sep=st.sampled_from([" ", "T"]),
    spec=st.sampled_from(["auto", "seconds", "microseconds"]),
)
@settings(max_examples=300, deadline=None)
def test_a_sqlite_timestamp_reads_back_as_the_utc_instant_its_text_names(
    moment: datetime, sep: str, spec: str
) -> None:
    """The archiver's own text (naive UTC, `2026-01-05 21:17:36.000000`) and any other ISO text a hand or a
    view may leave in a timestamp column (a `T`, an offset of its own, a `Z`, a date alone) read back as an
    aware UTC datetime, the instant the text names."""
    texts = [moment.isoformat(sep, spec)]
    if moment.tzinfo is not None and moment.utcoffset() == timedelta(0):
        texts.append(moment.replace(tzinfo=None).isoformat(sep, spec) + "Z")
    texts.append(moment.date().isoformat())
    engine = sa.create_engine("sqlite://")
    table = sa.Table("t", sa.MetaData(), sa.Column("at", UTCDateTime()))
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (at DATETIME)")
        for text in texts:
            connection.exec_driver_sql("INSERT INTO t (at) VALUES (?)", (text,))
        read = connection.execute(sa.select(table.c.at)).scalars().all()
    for text, value in zip(texts, read, strict=True):
        named = datetime.fromisoformat(text.replace("Z", "+00:00"))
        expected = named.replace(tzinfo=UTC) if named.tzinfo is None else named.astimezone(UTC)
        assert value == expected and value.tzinfo is UTC, (text, value)
