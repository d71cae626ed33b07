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

import logging
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.views import FACTS

log = logging.getLogger(__name__)

LIVE = "_live"


def live(name: str) -> str:
    """The view that computes facts table `name`."""
    return f"{name}{LIVE}"


def refresh(connection: Connection) -> None:
    """Rewrite every facts table from its view, in this connection's transaction.

    An archive at a revision before the facts tables has nothing to refresh.
    """
    present = set(sa.inspect(connection).get_table_names())
    started = time.monotonic()
    for table in FACTS:  # in order: `job_facts_live` reads the `checkpoint_facts` table
        if table.name in present:
            rewrite(connection, table)
    log.info("refreshed the facts tables in %.2f s", time.monotonic() - started, extra={"event": "facts"})


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
