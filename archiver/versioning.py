"""Write a versioned table (see `schema.Versioned`): insert new rows, version changed ones, skip the rest.

A changed row's earlier state moves to its history table, as ending where the new one begins; a
row no longer listed is retired, its deletion a version too. Helpers take a connection and never
commit. What a table's rows are, and when they are written, is `archiver.store`'s business.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.bulk import getter
from archiver.db import chunked, upsert
from archiver.normalize import Row
from archiver.schema import UTCDateTime, Versioned

WRITE_PIECE_ROWS = 10_000  # rows decided and written together by `save_versions`


@dataclass
class WriteCounts:
    """What writes did to the checkpoints table."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def add(self, other: WriteCounts) -> None:
        """Count `other` too."""
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted


class Archived(NamedTuple):
    """A current row as the archive holds it: its primary key, since when, its values, and any other
    columns asked for (`archived_rows`' `also`)."""

    id: Any
    valid_from: datetime
    values: tuple[Any, ...]
    also: tuple[Any, ...] = ()


def archived_rows(
    connection: Connection,
    versioned: Versioned,
    where: sa.ColumnElement[bool],
    key: Sequence[str] = ("id",),
    *,
    also: Sequence[str] = (),
) -> dict[tuple[Any, ...], Archived]:
    """The current rows that `where` selects, by `key`; with `also`, these columns of each too."""
    table = versioned.table
    query = sa.select(
        *(table.c[name].label(f"key_{index}") for index, name in enumerate(key)),
        table.c.id,
        table.c.valid_from,
        *(table.c[name] for name in versioned.values),
        *(table.c[name] for name in also),
    ).where(where)
    width = len(key)
    end = width + 2 + len(versioned.values)
    return {
        tuple(row[:width]): Archived(
            row[width], row[width + 1], tuple(row[width + 2 : end]), tuple(row[end:])
        )
        for row in connection.execute(query)
    }


def save_versions(
    connection: Connection,
    versioned: Versioned,
    rows: Iterable[Row],
    now: datetime,
    archived: dict[tuple[Any, ...], Archived],
    *,
    key: Sequence[str] = ("id",),
    touch: bool = True,
) -> WriteCounts:
    """Write what `rows` says of a versioned table: insert new rows, version changed ones, skip the rest.

    `archived` holds the current rows for these keys (see `archived_rows`); rows found there are
    removed from it, so what is left afterwards was not in `rows`. A changed row's earlier state
    moves to the history table, unless this same run wrote it (one run, one version). With `touch`,
    an unchanged row's `last_seen_at` still moves to `now`.
    """
    counts = WriteCounts()
    pending = iter(rows)
    key_of, values_of = getter(key), getter(versioned.values)
    # A piece at a time: a job of 100,000 checkpoints must not hold them all twice over.
    while piece := list(itertools.islice(pending, WRITE_PIECE_ROWS)):
        changed: list[Row] = []
        superseded: list[Any] = []
        unchanged: list[Any] = []
        for row in piece:
            before = archived.pop(key_of(row), None)
            if before is None:
                counts.inserted += 1
            elif before.values != values_of(row):
                counts.updated += 1
                if before.valid_from < now:
                    superseded.append(before.id)
            else:
                counts.unchanged += 1
                unchanged.append(before.id)
                continue
            changed.append({**row, "valid_from": now})
        del piece
        _write_versions(connection, versioned, changed, superseded, unchanged, now, key=key, touch=touch)
    return counts


def _write_versions(
    connection: Connection,
    versioned: Versioned,
    changed: list[Row],
    superseded: list[Any],
    unchanged: list[Any],
    now: datetime,
    *,
    key: Sequence[str],
    touch: bool,
) -> None:
    """Move superseded states to history, upsert the changed rows, touch the unchanged ones."""
    table = versioned.table
    for batch in chunked(superseded):
        close_versions(connection, versioned, table.c.id.in_(batch), now)
    upsert(connection, table, changed, key=list(key))
    if touch:
        for batch in chunked(unchanged):
            connection.execute(sa.update(table).where(table.c.id.in_(batch)).values(last_seen_at=now))


def close_versions(
    connection: Connection, versioned: Versioned, which: sa.ColumnElement[bool], now: datetime
) -> None:
    """Copy the current state of the rows `which` selects into history, as ending at `now`."""
    table, history = versioned.table, versioned.history
    columns = (*versioned.identity, *versioned.values, "valid_from")
    connection.execute(
        sa.insert(history).from_select(
            [*columns, "valid_to"],
            sa.select(*(table.c[name] for name in columns), sa.literal(now, UTCDateTime())).where(which),
        )
    )


def retire(
    connection: Connection, versioned: Versioned, which: sa.ColumnElement[bool], now: datetime, **also: Any
) -> int:
    """Mark the live rows `which` selects deleted, as a new version of each; return how many."""
    table = versioned.table
    live = sa.and_(which, table.c.deleted_at.is_(None))
    close_versions(connection, versioned, sa.and_(live, table.c.valid_from < now), now)
    result = connection.execute(sa.update(table).where(live).values(deleted_at=now, valid_from=now, **also))
    return result.rowcount or 0
