"""The facts tables BI tools read, refreshed from their `_live` views at the end of each sync.

`checkpoint_facts`, `job_facts`, `project_storage_daily`, `gpu_hours_daily` and
`checkpoint_lora_modules` are tables (revision 0014): every column has a declared type on SQLite
too, and a group-by or a facet reads a few thousand rows rather than recomputing every
checkpoint's facts. What they hold is computed by the views of the same name with `_live` added,
which read the archive as it is; `refresh` rewrites each table from its view in the caller's
transaction, so a reader sees the rows of one refresh or the next, never a mix. Their "now"
(hours in a status, a running job's GPU-hours) is the refresh's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.schema import facts_inputs
from archiver.views import FACTS

log = logging.getLogger(__name__)

LIVE = "_live"


def live(name: str) -> str:
    """The view that computes facts table `name`."""
    return f"{name}{LIVE}"


def refresh(connection: Connection, *, keep_unchanged: bool = False) -> None:
    """Rewrite every facts table from its view, in this connection's transaction.

    With `keep_unchanged` (a sync's refresh), a table that depends on nothing but its inputs
    (`STEADY`) is left as it is when their fingerprint is the one recorded at its last rewrite.
    An archive at a revision before the facts tables has nothing to refresh.
    """
    present = set(sa.inspect(connection).get_table_names())
    started = time.monotonic()
    inputs = fingerprint(connection) if facts_inputs.name in present else None
    recorded: dict[str, str] = {}
    if inputs is not None and keep_unchanged:
        recorded = {
            name: text
            for name, text in connection.execute(sa.select(facts_inputs.c.name, facts_inputs.c.inputs))
        }
    kept = []
    for table in FACTS:  # in order: `job_facts_live` reads the `checkpoint_facts` table
        if table.name not in present:
            continue
        if table.name in STEADY and inputs is not None and recorded.get(table.name) == inputs:
            kept.append(table.name)
            continue
        rewrite(connection, table)
        if inputs is not None:
            record = {"name": table.name, "inputs": inputs, "refreshed_at": datetime.now(UTC)}
            connection.execute(sa.delete(facts_inputs).where(facts_inputs.c.name == table.name))
            connection.execute(sa.insert(facts_inputs).values(record))
    log.info(
        "refreshed the facts tables in %.2f s%s",
        time.monotonic() - started,
        f" ({', '.join(kept)} unchanged)" if kept else "",
        extra={"event": "facts"},
    )


# The facts tables computed from their inputs alone: no "now", no calendar. The others count hours up
# to the refresh (`job_facts`, `gpu_hours_daily`) or days up to today (`project_storage_daily`).
STEADY = frozenset({"checkpoint_facts", "checkpoint_lora_modules"})

# What the steady tables are computed from, and the columns whose latest value moves with every write
# a run makes: each write of a run stamps its start there (a new version's `valid_from`, a sighting's
# `last_seen_at`, a deletion's `deleted_at`, a read's `checkpoints_fetched_at`), and run starts only
# increase (`archiver.sync.run`). With the row counts and the counts of set stamps (a stamp cleared),
# the fingerprint changes with every write to these rows.
INPUTS = {
    "checkpoints": ("valid_from", "first_seen_at", "last_seen_at", "deleted_at"),
    "training_jobs": ("valid_from", "deleted_at", "checkpoints_fetched_at"),
    "training_projects": ("valid_from", "deleted_at"),
    "instance_types": ("valid_from",),
    "lora_adapter_configs": ("first_seen_at", "id"),
}


def fingerprint(connection: Connection) -> str:
    """The steady facts tables' inputs, summed up: a JSON text that changes with every write to them."""
    summary: dict[str, list[str]] = {}
    for name, stamps in INPUTS.items():
        table = sa.table(name, *(sa.column(stamp) for stamp in stamps))
        aggregates: list[sa.ColumnElement[Any]] = [sa.func.count()]
        for stamp in stamps:
            aggregates += [sa.func.count(table.c[stamp]), sa.func.max(table.c[stamp])]
        row = connection.execute(sa.select(*aggregates).select_from(table)).one()
        summary[name] = [str(value) for value in row]
    return json.dumps(summary, sort_keys=True)


def rewrite(connection: Connection, table: sa.Table) -> None:
    """Replace facts table `table`'s rows with what its view computes now."""
    names = [c.name for c in table.columns]
    computed = sa.table(live(table.name), *(sa.column(name) for name in names))
    connection.execute(sa.delete(table))
    connection.execute(sa.insert(table).from_select(names, sa.select(computed)))


NAMES = frozenset(table.name for table in FACTS)


def modelled(name: str | None, type_: Any, parent_names: Mapping[Any, str | None]) -> bool:
    """Alembic's `include_name`: whether autogenerate should hold this object to `archiver.schema`.

    Not the facts tables and their indexes: revision 0014 makes them and `refresh` fills them.
    """
    return name not in NAMES and parent_names.get("table_name") not in NAMES
