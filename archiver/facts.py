"""The facts tables BI tools read, refreshed from their `_live` views by each sync.

`checkpoint_facts`, `job_facts`, `project_storage_daily`, `gpu_hours_daily` and
`checkpoint_lora_modules` are tables (revision 0014): every column has a declared type on SQLite
too, and a group-by or a facet reads a few thousand rows rather than recomputing every
checkpoint's facts. What they hold is computed by the views of the same name with `_live` added,
which read the archive as it is; `refresh` rewrites each table from its view in the caller's
transaction, so a reader sees the rows of one refresh or the next, never a mix. Their "now"
(hours in a status, a running job's GPU-hours) is the refresh's. A sync rewrites the rows of the
tables that need no "now" (`STEADY`) in each transaction that writes jobs (`rewrite_written`), and
the rest at its end (`refresh`), with what it cannot show is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver import upkeep
from archiver.contract import TERMINAL_JOB_STATUSES
from archiver.db import chunked, describe_db_error
from archiver.schema import (
    checkpoints,
    facts_inputs,
    instance_types,
    lora_adapter_configs,
    training_jobs,
    training_projects,
)
from archiver.views import FACTS

log = logging.getLogger(__name__)

LIVE = "_live"


def live(name: str) -> str:
    """The view that computes facts table `name`."""
    return f"{name}{LIVE}"


def refresh(
    connection: Connection,
    *,
    keep_unchanged: bool = False,
    current: Current | None = None,
    analyzed: Collection[str] = (),
) -> None:
    """Rewrite every facts table from its view, in this connection's transaction.

    With `keep_unchanged` (a sync's refresh), a table that depends on nothing but its inputs
    (`STEADY`) is left as it is when their fingerprint is the one recorded at its last rewrite, and
    only the rows of the jobs written since are rewritten when nothing else it reads changed. So is
    a table whose "now" moves only some of its columns (`CLOCKED`), which are then brought to now.
    `current` names jobs whose rows of those tables the run rewrote as it wrote them (see
    `rewrite_written`): while the inputs are still as they were after the last of those rewrites,
    those rows are left as they are. A table that also counts a running job's hours so far
    (`RUNNING`) is rewritten, on the day of its last rewrite, only for the jobs still running and
    those written since (`_stale_runs`).
    An archive at a revision before the facts tables has nothing to refresh. On PostgreSQL the tables
    the views read are analyzed first (`upkeep.analyze`), but for those `analyzed` ahead of the run's end.
    """
    present = set(sa.inspect(connection).get_table_names())
    started = time.monotonic()
    upkeep.analyze(connection, leave=analyzed)
    inputs = Inputs.of(connection) if facts_inputs.name in present else None
    recorded: dict[str, Inputs | None] = {}
    today = _today(connection)
    if inputs is not None and keep_unchanged:
        query = sa.select(facts_inputs.c.name, facts_inputs.c.inputs)
        recorded = {name: Inputs.parse(text) for name, text in connection.execute(query)}
    fresh = (
        current.jobs if keep_unchanged and current is not None and current.inputs == inputs else frozenset()
    )
    done: list[str] = []
    rewritten: list[str] = []
    jobs = _Jobs(connection)
    for table in FACTS:  # in order: `job_facts_live` reads the `checkpoint_facts` table
        if table.name not in present:
            continue
        before = recorded.get(table.name)  # (recorded only with `keep_unchanged` and inputs)
        if before is not None and before == inputs and table.name in STEADY:
            done.append(f"{table.name} unchanged")
            continue
        if table.name in DAILY and _as_today(before, inputs, today):
            done.append(f"{table.name} unchanged today")
            continue
        stale: list[str] | None = None  # the jobs whose rows alone are rewritten, or None: the whole table
        if inputs is not None and keep_unchanged:
            if table.name in STEADY:
                stale = _stale_jobs(jobs, before, inputs, fresh)
            elif table.name in CLOCKED:  # the run rewrote none of its rows as it wrote them
                stale = [] if before == inputs else _stale_jobs(jobs, before, inputs, frozenset())
            elif table.name in RUNNING:
                stale = _stale_runs(jobs, before, inputs, today)
        if stale is not None:
            if stale:
                rewrite_jobs(connection, table, stale)
            if table.name in CLOCKED:
                bring_to_now(connection, table)
                done.append(
                    f"{table.name} for {len(stale)} job(s), brought to now"
                    if stale
                    else f"{table.name} brought to now"
                )
            elif table.name in RUNNING and not stale:
                done.append(f"{table.name} unchanged today")
            else:
                kept = (
                    f", {len(fresh)} rewritten as they were written" if fresh and table.name in STEADY else ""
                )
                done.append(f"{table.name} for {len(stale)} job(s){kept}")
            rewritten.append(table.name)
            continue
        rewrite(connection, table)
        rewritten.append(table.name)
    if inputs is not None and rewritten:
        now = datetime.now(UTC)
        connection.execute(sa.delete(facts_inputs).where(facts_inputs.c.name.in_(rewritten)))
        connection.execute(
            sa.insert(facts_inputs),
            [
                {
                    "name": name,
                    "inputs": replace(inputs, day=today if name in DAILY | RUNNING else None).text(),
                    "refreshed_at": now,
                }
                for name in rewritten
            ],
        )
    log.info(
        "refreshed the facts tables in %.2f s%s",
        time.monotonic() - started,
        f" ({', '.join(done)})" if done else "",
        extra={"event": "facts"},
    )


@dataclass(frozen=True)
class Current:
    """Jobs whose rows of the steady tables a run rewrote after it wrote them (`rewrite_written`),
    and the inputs once the last of those rewrites was committed."""

    jobs: frozenset[str]
    inputs: Inputs


def rewrite_written(connection: Connection, jobs: Sequence[str]) -> bool:
    """Rewrite the steady tables' rows of `jobs`, written in this transaction, as part of it.

    A sync does this as it writes each batch of jobs, while the fetches it let run ahead go on,
    rather than all at its end (SQLite computes them without holding the GIL; PostgreSQL in its
    own process). In a savepoint: if the database refuses it, the jobs' rows are still written,
    the refusal is logged, and False says that the refresh at the run's end must rewrite them.
    A database lost on the way is not a refusal: that is raised, and fails the write as any would.
    """
    try:
        with connection.begin_nested():
            for table in FACTS:
                if table.name in STEADY:
                    rewrite_jobs(connection, table, jobs)
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated or connection.invalidated:
            raise
        log.warning(
            "could not rewrite the facts of %d job(s) as they were written; the run's end will: %s",
            len(jobs),
            describe_db_error(exc),
        )
        return False
    return True


# The facts tables computed from their inputs alone: no "now", no calendar. The others count hours up
# to the refresh (`job_facts`, `gpu_hours_daily`) or days up to today (`project_storage_daily`).
STEADY = frozenset({"checkpoint_facts", "checkpoint_lora_modules"})
# The facts tables computed from their inputs and "now", which moves nothing but these columns of a
# row: the hours from one of its own timestamps up to now, as its view counts them, and its job's
# last sighting, which every night moves and no fingerprint counts. Their rows are kept or rewritten
# by job as a steady table's, then brought to now in one statement (`bring_to_now`): rewriting
# `job_facts` whole took 0.11 s (SQLite) and 0.15 s (PostgreSQL) of an unchanged 92,520-checkpoint
# night, and grows with every checkpoint archived.
CLOCKED: dict[str, dict[str, str]] = {
    "job_facts": {"hours_in_status": "job_status_since", "hours_since_update": "updated_at"},
}
CLOCKED_SIGHTING = "last_seen_at"  # a job's, copied from `training_jobs`
# The facts tables computed from their inputs and the day: a row a day up to today, within ten years.
DAILY = frozenset({"project_storage_daily"})
# The facts tables computed from their inputs, the day, and when each job still running was last seen
# (its run so far): a row a day of each run, per job.
RUNNING = frozenset({"gpu_hours_daily"})


def _as_today(before: Inputs | None, now: Inputs | None, today: str) -> bool:
    """Whether a `DAILY` table computed from `before` is what it would be `now`: computed today, and
    nothing it reads changed since (a sighting is not read)."""
    return before is not None and now is not None and before.day == today and before.same_but(now, SIGHTINGS)


def _today(connection: Connection) -> str:
    """The UTC day the views count to, as the database's clock has it (revision 0003's `today`)."""
    if connection.dialect.name == "sqlite":
        query = "SELECT date('now')"
    else:
        query = "SELECT CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS DATE)"
    return str(connection.exec_driver_sql(query).scalar_one())


# What the steady tables are computed from, and the columns whose latest value moves with every write
# a run makes: each write of a run stamps its start there (a new version's `valid_from`, a sighting's
# `last_seen_at`, a deletion's `deleted_at`, a read's `checkpoints_fetched_at`), and run starts only
# increase (`archiver.sync.run`). With the row counts and the counts of set stamps (a stamp cleared),
# the fingerprint changes with every write to these rows. LoRA configs are never changed, only added.
INPUTS: dict[sa.Table, tuple[str, ...]] = {
    checkpoints: ("valid_from", "first_seen_at", "last_seen_at", "deleted_at"),
    training_jobs: ("valid_from", "deleted_at", "checkpoints_fetched_at"),
    training_projects: ("valid_from", "deleted_at"),
    instance_types: ("valid_from",),
    lora_adapter_configs: ("first_seen_at",),
}
_STAMPS = {table.name: stamps for table, stamps in INPUTS.items()}
# The stamps that a read of a job's checkpoints moves when it finds them as they were (a periodic
# re-read, or --full): when it read them, and when it saw each. `DAILY` tables read neither, so a
# night of such reads leaves them as they were that day.
SIGHTINGS: dict[str, tuple[str, ...]] = {
    checkpoints.name: ("last_seen_at",),
    training_jobs.name: ("checkpoints_fetched_at",),
}
# The tables every fact reads, and the columns the facts views read of them (revision 0026's; a test in
# `test_views` holds the views to it). A project gets a new version whenever it starts a job (its
# `latest_job_id`, `updated_at`): alone, that changes no fact. A change to what they read rewrites the
# facts of the project's jobs (`Shared`); an instance type's, every job's.
SHARED: dict[sa.Table, tuple[str, ...]] = {
    training_projects: ("id", "name", "team_name", "deleted_at"),
    instance_types: ("id", "name", "gpu_type", "gpu_count", "nodes"),
}


@dataclass(frozen=True)
class Shared:
    """What the facts views read of the `SHARED` tables, summed up: a digest of the instance types, and
    one per project of its columns and of whether another project has its name (its label then names
    its id: a rename can change another project's label)."""

    types: str
    projects: dict[str, str]

    @classmethod
    def of(cls, connection: Connection) -> Shared:
        types = b"".join(repr(row).encode() + b"\x00" for row in _read(connection, instance_types))
        projects = _read(connection, training_projects)  # (id, name, ...)
        named = Counter(name for _, name, *_ in projects if name)
        return cls(
            hashlib.sha256(types).hexdigest(),
            {
                str(id_): hashlib.sha256(
                    repr((name, *rest, bool(name) and named[name] > 1)).encode()
                ).hexdigest()[:16]
                for id_, name, *rest in projects
            },
        )

    def changed_projects(self, now: Shared) -> set[str]:
        """The projects whose facts read something else `now` (new, gone, renamed, moved, deleted, relabelled)."""
        return {
            project
            for project in self.projects.keys() | now.projects.keys()
            if self.projects.get(project) != now.projects.get(project)
        }

    @classmethod
    def parse(cls, found: object) -> Shared | None:
        """What `Inputs.text` recorded of it, or None (recorded before it was, or not one)."""
        if not isinstance(found, dict) or not isinstance(found.get("types"), str):
            return None
        projects = found.get("projects")
        if not isinstance(projects, dict) or not all(isinstance(v, str) for v in projects.values()):
            return None
        return cls(found["types"], {str(k): v for k, v in projects.items()})


def _read(connection: Connection, table: sa.Table) -> list[tuple[Any, ...]]:
    """What the facts views read of a `SHARED` table: its rows' read columns, in id order."""
    query = sa.select(*(table.c[name] for name in SHARED[table])).order_by(table.c.id)
    return [tuple(row) for row in connection.execute(query)]


_SHARED_NAMES = frozenset(table.name for table in SHARED)


@dataclass(frozen=True)
class Inputs:
    """The steady facts tables' inputs summed up: per table, its row count and each stamp's count and
    latest value; the latest stamp of all, after which every later write is stamped; and a digest of
    what the facts read of the `SHARED` tables (`Shared`)."""

    tables: dict[str, list[str]]
    stamped_until: datetime | None
    day: str | None = field(default=None, compare=False)  # the UTC day a `DAILY` table counted to
    shared: Shared | None = None  # None: recorded before it was (every row is then taken as stale)

    @classmethod
    def of(cls, connection: Connection) -> Inputs:
        tables: dict[str, list[str]] = {}
        latest: list[datetime] = []
        for table, stamps in INPUTS.items():
            aggregates: list[sa.ColumnElement[Any]] = [sa.func.count()]
            for stamp in stamps:
                aggregates += [sa.func.count(table.c[stamp]), sa.func.max(table.c[stamp])]
            row = connection.execute(sa.select(*aggregates).select_from(table)).one()
            tables[table.name] = [str(value) for value in row]
            latest += [value for value in row[2::2] if value is not None]
        return cls(tables, max(latest, default=None), shared=Shared.of(connection))

    def same_but(self, other: Inputs, stamps: Mapping[str, tuple[str, ...]]) -> bool:
        """Whether `other` differs from these inputs in nothing but `stamps` (per table; and so the latest
        stamp of all, which it leaves out)."""
        return self._without(stamps) == other._without(stamps)

    def _without(self, stamps: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
        left: dict[str, list[str]] = {}
        for table, values in self.tables.items():
            names = _STAMPS.get(table, ())  # values: the row count, then each stamp's count and latest (`of`)
            dropped = {1 + 2 * names.index(name) + k for name in stamps.get(table, ()) for k in (0, 1)}
            left[table] = [value for i, value in enumerate(values) if i not in dropped]
        return left

    def text(self) -> str:
        """As `facts_inputs` records them."""
        until = None if self.stamped_until is None else self.stamped_until.isoformat()
        found: dict[str, Any] = {"tables": self.tables, "stamped_until": until}
        if self.day is not None:
            found["day"] = self.day
        if self.shared is not None:
            found["shared"] = {"types": self.shared.types, "projects": self.shared.projects}
        return json.dumps(found, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> Inputs | None:
        """The inputs a text of `text()` records, or None if it is not one (nothing is then kept)."""
        try:
            found = json.loads(text)
            until, day, shared = found["stamped_until"], found.get("day"), found.get("shared")
            return cls(
                found["tables"],
                None if until is None else datetime.fromisoformat(until),
                day if isinstance(day, str) else None,
                Shared.parse(shared),
            )
        except (ValueError, KeyError, TypeError):
            return None


class _Jobs:
    """What a refresh reads of the jobs, once however many tables ask: every job, and the jobs with
    rows written since a stamp (a scan of every checkpoint)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._every: set[str] | None = None
        self._written: dict[datetime, set[str]] = {}

    def every(self) -> set[str]:
        if self._every is None:
            self._every = set(self.connection.execute(sa.select(training_jobs.c.id)).scalars())
        return self._every

    def of_projects(self, projects: set[str]) -> set[str]:
        found: set[str] = set()
        for batch in chunked(sorted(projects), JOBS_A_STATEMENT):
            query = sa.select(training_jobs.c.id).where(training_jobs.c.training_project_id.in_(batch))
            found.update(self.connection.execute(query).scalars())
        return found

    def written_since(self, since: datetime) -> set[str]:
        if since not in self._written:
            query = sa.union(
                sa.select(training_jobs.c.id).where(
                    sa.or_(*(training_jobs.c[s] > since for s in INPUTS[training_jobs]))
                ),
                sa.select(checkpoints.c.training_job_id).where(
                    sa.or_(*(checkpoints.c[s] > since for s in INPUTS[checkpoints]))
                ),
            )
            self._written[since] = set(self.connection.execute(query).scalars())
        return self._written[since]


def _stale_jobs(jobs: _Jobs, before: Inputs | None, now: Inputs, fresh: frozenset[str]) -> list[str] | None:
    """The jobs whose rows of a steady table must be rewritten, or None for the whole table.

    Those with rows written since `before`, and the jobs of the projects whose facts read something
    else (`Shared`): every job, when nothing was recorded or an instance type changed. But for the
    `fresh` ones, whose rows are as computed now; None when that is most jobs, or a write no stamp
    shows moved the fingerprint. A project's other columns (its latest job, `updated_at`) make no job stale.
    """
    if (
        before is None
        or before.stamped_until is None
        or before.shared is None
        or now.shared is None
        or before.shared.types != now.shared.types
    ):
        if not fresh:
            return None
        written = jobs.every()
    else:
        changed = jobs.of_projects(before.shared.changed_projects(now.shared))
        written = jobs.written_since(before.stamped_until) | changed
        moved = {name for name, values in now.tables.items() if before.tables.get(name) != values}
        if not written and not moved <= _SHARED_NAMES:
            return None  # none written, yet the fingerprint moved: a write no stamp shows (by hand?)
    stale = sorted(written - fresh)
    return stale if 2 * len(stale) <= len(jobs.every()) else None


def _stale_runs(jobs: _Jobs, before: Inputs | None, now: Inputs, today: str) -> list[str] | None:
    """The jobs whose rows of a `RUNNING` table must be rewritten, or None for the whole table.

    Those written since `before` (see `_stale_jobs`), and every job whose run the views take to end
    when it was last seen, which moves with each sighting and no stamp shows: one still running, or
    finished without saying when. None on another day than `before`'s (the days counted end today),
    when that is most jobs, or more than one statement names: the view expands every run into its
    days before a statement picks some jobs' rows, so each statement costs part of a whole rewrite.
    """
    if before is None or before.day != today:
        return None
    written = [] if before == now else _stale_jobs(jobs, before, now, frozenset())
    if written is None:
        return None
    job = training_jobs.c
    open_runs = sa.select(job.id).where(
        sa.or_(
            job.current_status.is_(None),
            job.current_status.not_in(sorted(TERMINAL_JOB_STATUSES)),
            job.updated_at.is_(None),
        )
    )
    stale_runs = sorted(set(written) | set(jobs.connection.execute(open_runs).scalars()))
    total = len(jobs.every())
    return stale_runs if len(stale_runs) <= JOBS_A_STATEMENT and 2 * len(stale_runs) <= total else None


def rewrite(connection: Connection, table: sa.Table) -> None:
    """Replace facts table `table`'s rows with what its view computes now."""
    computed = _computed(table)
    connection.execute(sa.delete(table))
    with _indexes_set_aside(connection, table):
        connection.execute(sa.insert(table).from_select(list(computed.c.keys()), sa.select(computed)))


@contextmanager
def _indexes_set_aside(connection: Connection, table: sa.Table) -> Iterator[None]:
    """On SQLite, drop `table`'s indexes for the block and make them again, as they were, after it.

    Building an index once from all its rows is cheaper than keeping it up to date row by row:
    rewriting `checkpoint_facts` and `checkpoint_lora_modules` of 92,520 checkpoints took 1.18 s
    with their indexes kept, 0.88-0.93 s with them set aside. The transaction hides it from readers.
    Not on PostgreSQL, where dropping an index would lock readers out until the commit.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL"
    indexes = connection.exec_driver_sql(query, (table.name,)).all()
    for name, _ in indexes:
        connection.exec_driver_sql(f"DROP INDEX {connection.dialect.identifier_preparer.quote(name)}")
    yield
    for _, sql in indexes:  # each as its revision wrote it
        connection.exec_driver_sql(sql)


def bring_to_now(connection: Connection, table: sa.Table) -> None:
    """Set a `CLOCKED` table's hours to now and its jobs' last sightings to the archive's, in one statement.

    The hours are the arithmetic of its view (revision 0008's `hours_between`) on the timestamps the
    row holds, which are the ones its view read: the same value a rewrite would store.
    """
    job = training_jobs.c
    values: dict[str, Any] = {
        column: sa.literal_column(_hours_to_now(connection.dialect.name, since))
        for column, since in CLOCKED[table.name].items()
    }
    values[CLOCKED_SIGHTING] = (
        sa.select(job[CLOCKED_SIGHTING]).where(job.id == table.c.job_id).scalar_subquery()
    )
    connection.execute(sa.update(table).values(values))


def _hours_to_now(dialect: str, column: str) -> str:
    """The hours from `column` up to now, as the facts views count them (revision 0008)."""
    if dialect == "sqlite":

        def micros(ts: str) -> str:  # whole seconds, plus the text's microseconds (none in 'now')
            return f"(CAST(strftime('%s', {ts}) AS INTEGER) * 1000000 + CAST(substr({ts}, 21, 6) AS INTEGER))"

        now = micros("'now'")
        return f"CAST({now} - {micros(column)} AS REAL) / 3600000000.0"
    return (
        f"CAST(EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - {column})) * 1000000 AS DOUBLE PRECISION) "
        "/ CAST(3600000000 AS DOUBLE PRECISION)"
    )


JOBS_A_STATEMENT = 500  # the jobs `rewrite_jobs` names in one statement


def rewrite_jobs(connection: Connection, table: sa.Table, jobs: Sequence[str]) -> None:
    """Replace the rows of these jobs in facts table `table` (keyed by job) with what its view computes now."""
    computed = _computed(table)
    for batch in chunked(jobs, JOBS_A_STATEMENT):
        connection.execute(sa.delete(table).where(table.c.job_id.in_(batch)))
        chosen = sa.select(computed).where(computed.c.job_id.in_(batch))
        connection.execute(sa.insert(table).from_select(list(computed.c.keys()), chosen))


def _computed(table: sa.Table) -> sa.TableClause:
    """Facts table `table`'s `_live` view, with the table's columns."""
    return sa.table(live(table.name), *(sa.column(c.name) for c in table.columns))


NAMES = frozenset(table.name for table in FACTS)


def modelled(name: str | None, type_: Any, parent_names: Mapping[Any, str | None]) -> bool:
    """Alembic's `include_name`: whether autogenerate should hold this object to `archiver.schema`.

    Not the facts tables and their indexes: revision 0014 makes them and `refresh` fills them.
    """
    return name not in NAMES and parent_names.get("table_name") not in NAMES
