"""Whole-archive dumps for comparing two databases row for row, run bookkeeping left out."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.schema import UTCDateTime, metadata

# Tables about runs and the archiver's own bookkeeping, not about the organisation.
RUN_TABLES = {
    "sync_runs",
    "sync_errors",
    "api_responses",
    "api_response_bodies",
    "alembic_version",
    "facts_inputs",
}
# When the archiver saw something, and surrogate keys: they differ between two runs by design.
BOOKKEEPING = {
    "first_seen_at",
    "last_seen_at",
    "checkpoints_fetched_at",
    "observed_at",
    "sync_run_id",
    "valid_from",
    "valid_to",
}


def dump(engine: Engine, *, times: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every archive table as sorted rows, with bookkeeping columns dropped.

    Surrogate ids are dropped and references to them replaced by the natural key
    (a checkpoint's LoRA config by its sha256); `deleted_at` is reduced to "is deleted". With
    `times`, when things were seen stays in: sightings, deletions and every version's period.
    """
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        shas: dict[object, str] = dict(
            connection.execute(sa.text("SELECT id, config_sha256 FROM lora_adapter_configs")).all()
        )
        for table in metadata.sorted_tables:
            if table.name in RUN_TABLES:
                continue
            surrogate = {c.name for c in table.primary_key.columns if c.autoincrement is True}
            # A reference to another table's surrogate key (a history row's checkpoint) says nothing
            # its natural key beside it does not; LoRA configs are mapped to their sha256 below.
            surrogate |= {
                c.name
                for c in table.columns
                for key in c.foreign_keys
                if key.column.autoincrement is True and c.name != "lora_adapter_config_id"
            }
            skipped = {"sync_run_id"} if times else BOOKKEEPING
            columns = [c for c in table.columns if c.name not in skipped | surrogate]
            found = []
            for row in connection.execute(sa.select(*columns)):
                values = dict(row._mapping)
                if "lora_adapter_config_id" in values:
                    values["lora_adapter_config_id"] = shas.get(values["lora_adapter_config_id"])
                if "deleted_at" in values and not times:
                    values["deleted_at"] = values["deleted_at"] is not None
                found.append(tuple(sorted(values.items())))
            tables[table.name] = sorted(found, key=repr)
    return tables


def every_text(engine: Engine) -> str:
    """Every value of every table, run tables included, as one string to grep."""
    parts: list[str] = []
    with engine.connect() as connection:
        for name in sa.inspect(connection).get_table_names():
            for row in connection.execute(sa.text(f'SELECT * FROM "{name}"')):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


def stored_timestamps(engine: Engine) -> dict[str, list[object]]:
    """Every timestamp column's values as the driver hands them over ("table.column" -> values).

    SQLite gives the stored text, PostgreSQL a datetime: what pandas, Datasette or a BI tool reads.
    """
    found: dict[str, list[object]] = {}
    existing = set(sa.inspect(engine).get_table_names())  # an older revision has fewer tables
    with engine.connect() as connection:
        # Not the facts' bookkeeping: each migration's refresh rewrites it.
        for table in (t for t in metadata.sorted_tables if t.name in existing and t.name != "facts_inputs"):
            for column in table.columns:
                if isinstance(column.type, UTCDateTime):
                    query = f'SELECT "{column.name}" FROM "{table.name}" ORDER BY 1'
                    found[f"{table.name}.{column.name}"] = list(connection.exec_driver_sql(query).scalars())
    return found
