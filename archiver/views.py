"""The relations made for reading, described: names and types of their columns.

Alembic revisions create them (their SQL lives there, frozen): the facts tables of 0014, which
`archiver.facts` refreshes from the `_live` views (the BI views of 0003 as changed since), the
versions views and the job status history of 0004. These `Table` objects let the reports build
typed, parameterized queries on them. They sit on their own `MetaData` so neither `create_all`
nor autogenerate ever takes them for the archive's own tables.
`tests/test_views.py` checks that these columns are exactly the ones the database reports.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from archiver.descriptions import describe
from archiver.schema import INTERNAL_TABLES, VERSIONED, JSONDocument, UTCDateTime, Versioned

metadata = sa.MetaData()

# On SQLite a view's columns carry no types: these restore them (timestamps become aware UTC
# datetimes, days become dates, JSON is decoded) so results read the same on both databases.
Text, Int, BigInt, Time = sa.Text(), sa.Integer(), sa.BigInteger(), UTCDateTime()
Float: sa.Double[float] = sa.Double()


class ByteSum(sa.TypeDecorator[int | float]):
    """A sum of byte counts, exact wherever the database can hold it: read back as an int.

    PostgreSQL sums bigints as NUMERIC, exact at any size. SQLite is exact up to 2^63 - 1 and
    past it gives a REAL, read back as the float it is rather than an int that looks exact.
    """

    impl = sa.Numeric()
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        return _whole


def _whole(value: Any) -> Any:
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


Bytes = ByteSum()

checkpoint_facts = sa.Table(
    "checkpoint_facts",
    metadata,
    sa.Column("project_id", Text),
    sa.Column("project_name", Text),
    sa.Column("project_label", Text),
    sa.Column("team_name", Text),
    sa.Column("job_id", Text),
    sa.Column("job_name", Text),
    sa.Column("checkpoint_id", Text),
    sa.Column("checkpoint_type", Text),
    sa.Column("created_at", Time),
    sa.Column("size_bytes", BigInt),
    sa.Column("size_gib", Float),
    sa.Column("sync_status", Text),
    sa.Column("is_uploaded", sa.Boolean()),
    sa.Column("base_model", Text),
    sa.Column("lora_r", BigInt),
    sa.Column("lora_alpha", Float),
    sa.Column("lora_dropout", Float),
    sa.Column("lora_target_modules", JSONDocument),
    sa.Column("lora_target_modules_text", Text),
    sa.Column("job_status", Text),
    sa.Column("job_creator_email", Text),
    sa.Column("job_created_at", Time),
    sa.Column("instance_type_name", Text),
    sa.Column("gpu_type", Text),
    sa.Column("gpu_count", Int),
    sa.Column("first_seen_at", Time),
    sa.Column("last_seen_at", Time),
    sa.Column("deleted_at", Time),
    sa.Column("project_deleted_at", Time),
)

job_facts = sa.Table(
    "job_facts",
    metadata,
    sa.Column("job_id", Text),
    sa.Column("job_name", Text),
    sa.Column("project_id", Text),
    sa.Column("project_name", Text),
    sa.Column("project_label", Text),
    sa.Column("team_name", Text),
    sa.Column("job_status", Text),
    sa.Column("job_status_since", Time),
    sa.Column("hours_in_status", Float),
    sa.Column("error_message", Text),
    sa.Column("checkpoint_sync_status", Text),
    sa.Column("creator_email", Text),
    sa.Column("instance_type_name", Text),
    sa.Column("gpu_type", Text),
    sa.Column("gpu_count", Int),
    sa.Column("node_count", Int),
    sa.Column("node_count_source", Text),
    sa.Column("total_gpu_count", BigInt),
    sa.Column("created_at", Time),
    sa.Column("updated_at", Time),
    sa.Column("hours_since_update", Float),
    sa.Column("checkpoint_count", BigInt),
    sa.Column("live_checkpoint_count", BigInt),
    sa.Column("checkpoints_size_bytes", Bytes),
    sa.Column("checkpoints_size_gib", Float),
    sa.Column("live_size_bytes", Bytes),
    sa.Column("live_size_gib", Float),
    sa.Column("latest_checkpoint_id", Text),
    sa.Column("latest_checkpoint_size_bytes", BigInt),
    sa.Column("latest_checkpoint_size_gib", Float),
    sa.Column("first_checkpoint_at", Time),
    sa.Column("last_checkpoint_at", Time),
    sa.Column("hours_to_first_checkpoint", Float),
    sa.Column("wall_clock_hours", Float),
    sa.Column("gpu_hours_estimate", Float),
    sa.Column("first_seen_at", Time),
    sa.Column("last_seen_at", Time),
    sa.Column("deleted_at", Time),
    sa.Column("project_deleted_at", Time),
)

project_storage_daily = sa.Table(
    "project_storage_daily",
    metadata,
    sa.Column("project_id", Text),
    sa.Column("project_name", Text),
    sa.Column("project_label", Text),
    sa.Column("team_name", Text),
    sa.Column("day", sa.Date()),
    sa.Column("live_checkpoint_count", BigInt),
    sa.Column("live_size_bytes", Bytes),
    sa.Column("live_size_gib", Float),
)


gpu_hours_daily = sa.Table(
    "gpu_hours_daily",
    metadata,
    sa.Column("day", sa.Date()),
    sa.Column("project_id", Text),
    sa.Column("project_name", Text),
    sa.Column("project_label", Text),
    sa.Column("team_name", Text),
    sa.Column("job_id", Text),
    sa.Column("job_name", Text),
    sa.Column("job_status", Text),
    sa.Column("instance_type_id", Text),
    sa.Column("instance_type_name", Text),
    sa.Column("gpu_type", Text),
    sa.Column("gpu_count", Int),
    sa.Column("node_count", Int),
    sa.Column("total_gpu_count", BigInt),
    sa.Column("hours", Float),
    sa.Column("gpu_hours", Float),
)


checkpoint_lora_modules = sa.Table(
    "checkpoint_lora_modules",
    metadata,
    sa.Column("project_id", Text),
    sa.Column("job_id", Text),
    sa.Column("checkpoint_id", Text),
    sa.Column("module", Text),
    sa.Column("deleted_at", Time),
)


def _versions_view(versioned: Versioned) -> sa.Table:
    """Every version of a versioned table, earlier and current alike (`valid_to` NULL: current)."""
    return sa.Table(
        versioned.versions, metadata, *(sa.Column(c.name, c.type) for c in versioned.history.columns)
    )


VERSION_VIEWS = tuple(_versions_view(versioned) for versioned in VERSIONED)

training_job_status_history = sa.Table(
    "training_job_status_history",
    metadata,
    sa.Column("training_job_id", Text),
    sa.Column("status", Text),
    sa.Column("observed_at", Time),
    sa.Column("sync_run_id", BigInt),
)

# Tables since revision 0014, in refresh order (`archiver.facts`); each is computed by its `_live` view.
FACTS = (checkpoint_facts, job_facts, project_storage_daily, gpu_hours_daily, checkpoint_lora_modules)
LIVE_VIEWS = tuple(
    sa.Table(f"{facts.name}_live", metadata, *(sa.Column(c.name, c.type) for c in facts.columns))
    for facts in FACTS
)
VIEWS = (*LIVE_VIEWS, *VERSION_VIEWS, training_job_status_history)
READ_ONLY = (*FACTS, *VIEWS)  # every relation beyond `archiver.schema.metadata`: what readers read
# The bookkeeping, out of a reader's table list: in schema `archiver_internal` on PostgreSQL
# (revision 0017), hidden by Datasette's metadata on SQLite. The kept responses; the history, which
# the `*_versions` views put together with the current rows; and the `_live` views the facts tables
# are refreshed from, slow to chart.
INTERNAL = INTERNAL_TABLES | {view.name for view in (*LIVE_VIEWS, *VERSION_VIEWS)}

# Every relation and column is commented with its description, from archiver/descriptions.py.
describe(READ_ONLY, VERSIONED, facts=FACTS)
