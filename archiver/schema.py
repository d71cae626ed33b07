"""The archive's tables: the single source of truth for the schema.

Alembic revisions under `migrations/versions/` must produce exactly these tables;
`tests/test_migrations.py` checks that autogenerate finds no difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from archiver.descriptions import describe

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# The Alembic revision these tables (and the views of revision 0003) are at. Every new revision
# bumps it; `tests/test_migrations.py` checks it is the head of migrations/versions.
SCHEMA_REVISION = "0029"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every dialect.

    PostgreSQL stores `timestamptz`. SQLite has no time zones: the UTC instant is stored as
    fixed-width text, `2026-01-05 21:17:36.000000` (revision 0011), the form of SQLite's own
    `datetime()` and of the literals BI tools filter with, so text order is time order and
    `ts >= '2026-01-05 00:00:00'` or `ts > datetime('now', '-7 days')` count as on PostgreSQL.
    Every timestamp in the archive is UTC. It is read back as an aware datetime.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return sqlite_text

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return sqlite_instant

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return _as_utc(value)


def _as_utc(value: Any) -> datetime | None:
    """A value read from a timestamp column as an aware UTC datetime; naive means UTC."""
    if value is None:
        return None
    if isinstance(value, str):  # raw SQLite text, e.g. from a view
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_instant(value: str | None) -> datetime | None:
    """The instant SQLite's stored text means (`sqlite_text`), as an aware UTC datetime.

    The text is naive UTC: read with its offset added, in one C call, it is 9 times as fast as read
    and then given its time zone (`replace(tzinfo=...)` alone takes 1 µs), and a version diff reads
    two to seven of them a row. Any other text (a date alone, an offset of its own: written by hand, or
    by a view) is read as `process_result_value` reads it.
    """
    if value is None:  # most deletion stamps: answered before any call
        return None
    if isinstance(value, str):
        try:  # not `suppress`: a context manager would cost as much as the parse saves
            parsed = datetime.fromisoformat(value + "+00:00")
        except ValueError:  # text with an offset of its own
            pass
        else:
            if parsed.tzinfo is UTC:  # not so for a date alone, which reads "+00:00" as its time
                return parsed
    return _as_utc(value)


def sqlite_text(value: datetime | None) -> str | None:
    """The text SQLite stores for an instant: `2026-01-05 21:17:36.000000`, in UTC (naive means UTC).

    Few C calls per value: bulk writes bind tens of thousands of timestamps a second.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat(" ", "microseconds")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"


class _JSONDocument(sa.TypeDecorator[Any]):
    """JSON; JSONB on PostgreSQL: it has equality (needed to skip unchanged rows) and indexes.

    PostgreSQL's type is looked up when a PostgreSQL database is used: its dialect's modules, some
    30 ms of a start, are not loaded by a command on SQLite.
    """

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return super().load_dialect_impl(dialect)


JSONDocument = _JSONDocument()
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _seen_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    ]


training_projects = sa.Table(
    "training_projects",
    metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("name", sa.Text()),
    sa.Column("team_name", sa.Text()),
    sa.Column("created_at", UTCDateTime()),
    sa.Column("updated_at", UTCDateTime()),
    sa.Column("extra", JSONDocument),
    *_seen_columns(),
    sa.Column("deleted_at", UTCDateTime()),
    sa.Column("valid_from", UTCDateTime(), nullable=False),
    sa.Column("latest_job_id", sa.Text()),
    sa.Index(None, "name"),  # the facts' project labels look for another project of the same name (0020)
)

instance_types = sa.Table(
    "instance_types",
    metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("name", sa.Text()),
    sa.Column("memory_limit_mib", sa.BigInteger()),
    sa.Column("millicpu_limit", sa.BigInteger()),
    sa.Column("gpu_count", sa.Integer()),
    sa.Column("gpu_type", sa.Text()),
    sa.Column("gpu_memory_limit_mib", sa.BigInteger()),
    sa.Column("extra", JSONDocument),
    *_seen_columns(),
    sa.Column("valid_from", UTCDateTime(), nullable=False),
    sa.Column("nodes", sa.Integer()),
)

training_jobs = sa.Table(
    "training_jobs",
    metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("training_project_id", sa.Text(), sa.ForeignKey("training_projects.id"), nullable=False),
    sa.Column("instance_type_id", sa.Text(), sa.ForeignKey("instance_types.id")),
    sa.Column("name", sa.Text()),
    sa.Column("current_status", sa.Text()),
    sa.Column("error_message", sa.Text()),
    sa.Column("checkpoint_sync_status", sa.Text()),
    sa.Column("priority", sa.BigInteger()),
    sa.Column("user_email", sa.Text()),
    sa.Column("availability_model", sa.Text()),
    sa.Column("created_at", UTCDateTime()),
    sa.Column("updated_at", UTCDateTime()),
    sa.Column("extra", JSONDocument),
    *_seen_columns(),
    sa.Column("deleted_at", UTCDateTime()),
    # What the last full read of the job's checkpoints saw: the incremental sync skips a terminal
    # job whose `updated_at` and status have not moved since and whose checkpoints were all complete.
    sa.Column("checkpoints_fetched_at", UTCDateTime()),
    sa.Column("checkpoints_fetched_job_updated_at", UTCDateTime()),
    sa.Column("checkpoints_all_complete", sa.Boolean(create_constraint=False)),
    sa.Column("valid_from", UTCDateTime(), nullable=False),
    sa.Column("checkpoints_fetched_job_status", sa.Text()),
    sa.Column("node_count", sa.Integer()),
    sa.Index(None, "training_project_id"),
)

lora_adapter_configs = sa.Table(
    "lora_adapter_configs",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("config_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("r", sa.BigInteger()),
    sa.Column("lora_alpha", sa.Float()),
    sa.Column("lora_dropout", sa.Float()),
    sa.Column("target_modules", JSONDocument),
    sa.Column("task_type", sa.Text()),
    sa.Column("peft_type", sa.Text()),
    sa.Column("base_model_name_or_path", sa.Text()),
    sa.Column("config", JSONDocument, nullable=False),
    *_seen_columns(),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("training_job_id", sa.Text(), sa.ForeignKey("training_jobs.id"), nullable=False),
    sa.Column("checkpoint_id", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime()),
    sa.Column("checkpoint_type", sa.Text()),
    sa.Column("base_model", sa.Text()),
    sa.Column("lora_adapter_config_id", sa.BigInteger(), sa.ForeignKey("lora_adapter_configs.id")),
    sa.Column("size_bytes", sa.BigInteger()),
    sa.Column("sync_status", sa.Text()),
    sa.Column("extra", JSONDocument),
    *_seen_columns(),
    sa.Column("deleted_at", UTCDateTime()),
    sa.Column("valid_from", UTCDateTime(), nullable=False),
    sa.Column("target", sa.Text()),
    sa.Column("training_job_id_inferred", sa.Boolean(create_constraint=False)),
    sa.UniqueConstraint("training_job_id", "checkpoint_id"),
    sa.Index(None, "lora_adapter_config_id"),
    # Partial, `WHERE deleted_at IS NOT NULL` (revision 0027): the nightly drain check reads the checkpoints
    # marked deleted, not every one. Said here, the predicate would be a dialect argument of each database,
    # and naming one loads its dialect for every command (Alembic does not compare predicates).
    sa.Index(None, "deleted_at"),
)


@dataclass
class RunCounts:
    """What a run did, counted: each field is a column of `sync_runs` of the same name."""

    projects: int = 0
    jobs: int = 0
    jobs_fetched: int = 0
    jobs_skipped: int = 0
    jobs_failed: int = 0
    checkpoints_inserted: int = 0
    checkpoints_updated: int = 0
    checkpoints_unchanged: int = 0
    checkpoints_deleted: int = 0
    requests: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by column name."""
        return {name: getattr(self, name) for name in RUN_COUNTERS}


RUN_COUNTERS = tuple(counter.name for counter in fields(RunCounts))

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    # running, succeeded, partial, failed, interrupted
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("scope", JSONDocument),
    sa.Column("full_sync", sa.Boolean(create_constraint=False), nullable=False),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in RUN_COUNTERS),
    sa.Column("error_summary", sa.Text()),
    sa.Column("archiver_version", sa.Text(), nullable=False),
    sa.Column("hostname", sa.Text()),
    sa.Column("pid", sa.Integer()),
    # What else decided what the run archived (see SyncOptions.recorded), so `rebuild` can replay it.
    sa.Column("options", JSONDocument),
    sa.Index(None, "started_at"),
)

# Every API response a run acted on, so nothing the API sent is lost and `archiver rebuild` can
# replay the archive: the bodies once each (by content), compressed; a row per response.
api_response_bodies = sa.Table(
    "api_response_bodies",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),  # of the body as received
    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    sa.Column("encoding", sa.Text(), nullable=False),  # how `body` is compressed: zlib
    sa.Column("content_type", sa.Text()),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("withheld", sa.Text()),  # why the body was not kept (revision 0010)
)

api_responses = sa.Table(
    "api_responses",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("sync_run_id", sa.BigInteger(), sa.ForeignKey("sync_runs.id"), nullable=False),
    sa.Column("method", sa.Text(), nullable=False),
    sa.Column("path", sa.Text(), nullable=False),
    sa.Column("request_body", sa.Text()),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("body_id", sa.BigInteger(), sa.ForeignKey("api_response_bodies.id"), nullable=False),
    sa.Column("headers", sa.Text()),  # the kept headers as a JSON object (revision 0010)
    sa.Index(None, "sync_run_id"),
)

# Entries of a listing that broke the contract, quarantined alone: the rest of their listing was
# archived, they overwrote nothing and were never taken as gone (see `normalize.Rejected`).
rejected_entries = sa.Table(
    "rejected_entries",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("sync_run_id", sa.BigInteger(), sa.ForeignKey("sync_runs.id"), nullable=False),
    sa.Column("endpoint", sa.Text(), nullable=False),
    sa.Column("project_id", sa.Text()),
    sa.Column("job_id", sa.Text()),
    sa.Column("entry_id", sa.Text()),
    sa.Column("field", sa.Text()),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("entry", sa.Text(), nullable=False),
    sa.Column("rejected_at", UTCDateTime(), nullable=False),
    sa.Index(None, "sync_run_id"),
)

sync_errors = sa.Table(
    "sync_errors",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("sync_run_id", sa.BigInteger(), sa.ForeignKey("sync_runs.id"), nullable=False),
    sa.Column("project_id", sa.Text()),
    sa.Column("job_id", sa.Text()),
    # api, malformed, gone, database, ...
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Index(None, "sync_run_id"),
)

# What each facts table's inputs were when it was last rewritten (revision 0019): a sync leaves a
# table that depends on nothing but its inputs as it is while they are unchanged (`archiver.facts`).
facts_inputs = sa.Table(
    "facts_inputs",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("inputs", sa.Text(), nullable=False),
    sa.Column("refreshed_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True)
class Versioned:
    """A table whose every state is kept: the current one in `table`, the earlier ones in `history`.

    `valid_from` on the current row is when its state was first seen; a history row is a state
    that was current from `valid_from` until `valid_to`, when a run saw it change, be deleted
    (`deleted_at` set) or come back. The `<versions>` view puts the two together.
    """

    table: sa.Table
    history: sa.Table
    versions: str  # the view of every version, current ones with valid_to NULL
    values: tuple[str, ...]  # the columns whose change is a new version

    @property
    def identity(self) -> tuple[str, ...]:
        """The columns that say which row a history row is a version of."""
        return tuple(c.name for c in self.history.columns if c.name not in (*self.values, *PERIOD))


PERIOD = ("valid_from", "valid_to")


# Value columns added after the history tables were made (revision 0009): ALTER TABLE puts them after
# the period on PostgreSQL, so they stand there in every history table.
LATER_VALUES = frozenset({"latest_job_id", "nodes", "node_count", "target", "training_job_id_inferred"})


def _history(name: str, current: sa.Table, identity: tuple[str, ...], values: tuple[str, ...]) -> sa.Table:
    """The table of `current`'s earlier states: its identity and value columns, and the period each held."""

    def column(column: str) -> sa.Column[Any]:
        nullable = column in values and current.c[column].nullable
        return sa.Column(
            column, current.c[column].type, *_references(name, current, column), nullable=nullable
        )

    return sa.Table(
        name,
        metadata,
        *(column(c) for c in (*identity, *values) if c not in LATER_VALUES),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("valid_to", UTCDateTime(), nullable=False),
        *(column(c) for c in values if c in LATER_VALUES),
        sa.PrimaryKeyConstraint("id", "valid_from"),
    )


def _references(history: str, current: sa.Table, column: str) -> list[sa.ForeignKey]:
    """A history column refers where its current column does; `id` refers to the current row.

    Named `fk_<history>_<column>`: the naming convention's longer names would pass PostgreSQL's
    63 characters and be cut differently on each database.
    """
    targets = (
        [f"{current.name}.id"]
        if column == "id"
        else [k.target_fullname for k in current.c[column].foreign_keys]
    )
    return [sa.ForeignKey(target, name=f"fk_{history}_{column}") for target in targets]


def _versioned(
    current: sa.Table, singular: str, identity: tuple[str, ...], bookkeeping: tuple[str, ...]
) -> Versioned:
    skip = {*identity, *bookkeeping, "first_seen_at", "last_seen_at", "valid_from"}
    values = tuple(c.name for c in current.columns if c.name not in skip)
    history = _history(f"{singular}_history", current, identity, values)
    return Versioned(current, history, f"{singular}_versions", values)


VERSIONED = (
    _versioned(training_projects, "training_project", ("id",), ()),
    _versioned(instance_types, "instance_type", ("id",), ()),
    _versioned(
        training_jobs,
        "training_job",
        ("id",),
        (
            "checkpoints_fetched_at",
            "checkpoints_fetched_job_updated_at",
            "checkpoints_all_complete",
            "checkpoints_fetched_job_status",
        ),
    ),
    _versioned(checkpoints, "checkpoint", ("id", "training_job_id", "checkpoint_id"), ()),
)
VERSIONS = {versioned.table.name: versioned for versioned in VERSIONED}

# Every table and column is commented with its description, from archiver/descriptions.py.
describe(metadata.tables.values(), VERSIONED)

# On PostgreSQL the bookkeeping (kept responses, history; `archiver.views.INTERNAL` adds the views)
# lives in this schema (revision 0017), out of a BI tool's table list. The archiver's sessions have
# it last on their search path (`archiver.db`), so SQL names these tables alone on both databases,
# and reflection (autogenerate included) sees them beside the others.
INTERNAL_SCHEMA = "archiver_internal"
INTERNAL_TABLES = frozenset(
    {
        api_responses.name,
        api_response_bodies.name,
        facts_inputs.name,
        *(versioned.history.name for versioned in VERSIONED),
    }
)
