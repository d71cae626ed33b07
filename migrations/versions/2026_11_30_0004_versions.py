"""Keep every version: history tables beside the current ones; job status history becomes a view.

Why: the archive kept only the latest value of most things, so a changed size, a renamed project
or a re-specified instance type rewrote the past (issue 9). Now the current tables (still one row
per entity, fast for BI) carry `valid_from`, when their current state was first seen, and each has
a `*_history` table of its earlier states with the period each held (`valid_from`, `valid_to`),
as SQL:2011 system-versioned tables do. A deletion and a return are versions too (`deleted_at`).
The `*_versions` views put history and current rows together; `training_job_status_history`,
which stored job statuses a second time, becomes a view of `training_job_versions`.

What the old schema knew is kept as well as it allows: a deleted row's live state runs from its
first sighting to its deletion, and a job's states follow its recorded status history, each
carrying the job's present values for its other columns (which the old schema did not keep).

The BI views of 0003 read tables this revision changes, so they are dropped first and recreated,
unchanged, from 0003's frozen SQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import runpy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

BI_VIEWS = ("project_storage_daily", "job_facts", "checkpoint_facts")  # dependants first

# Frozen copies of archiver.schema's versioned tables: (table, history, versions view, identity, values).
PROJECT_VALUES = ("name", "team_name", "created_at", "updated_at", "extra", "deleted_at")
INSTANCE_TYPE_VALUES = (
    "name",
    "memory_limit_mib",
    "millicpu_limit",
    "gpu_count",
    "gpu_type",
    "gpu_memory_limit_mib",
    "extra",
)
JOB_VALUES = (
    "training_project_id",
    "instance_type_id",
    "name",
    "current_status",
    "error_message",
    "checkpoint_sync_status",
    "priority",
    "user_email",
    "availability_model",
    "created_at",
    "updated_at",
    "extra",
    "deleted_at",
)
CHECKPOINT_VALUES = (
    "created_at",
    "checkpoint_type",
    "base_model",
    "lora_adapter_config_id",
    "size_bytes",
    "sync_status",
    "extra",
    "deleted_at",
)
VERSIONED = (
    ("training_projects", "training_project_history", "training_project_versions", ("id",), PROJECT_VALUES),
    ("instance_types", "instance_type_history", "instance_type_versions", ("id",), INSTANCE_TYPE_VALUES),
    ("training_jobs", "training_job_history", "training_job_versions", ("id",), JOB_VALUES),
    (
        "checkpoints",
        "checkpoint_history",
        "checkpoint_versions",
        ("id", "training_job_id", "checkpoint_id"),
        CHECKPOINT_VALUES,
    ),
)

# When each current row's state began, as far as the old schema can tell.
VALID_FROM = {
    "training_projects": "COALESCE(deleted_at, first_seen_at)",
    "instance_types": "first_seen_at",
    "training_jobs": (
        "COALESCE(deleted_at, (SELECT MAX(h.observed_at) FROM training_job_status_history h "
        "WHERE h.training_job_id = training_jobs.id), first_seen_at)"
    ),
    "checkpoints": "COALESCE(deleted_at, first_seen_at)",
}


def _revision_0003() -> dict[str, Any]:
    """Revision 0003, whose view SQL is frozen there (a released revision never changes)."""
    return runpy.run_path(str(next(Path(__file__).parent.glob("*_0003_bi_views.py"))))


def _create_bi_views() -> None:
    bi = _revision_0003()
    dialect = bi["PostgreSQL"] if op.get_bind().dialect.name == "postgresql" else bi["SQLite"]
    for view in ("checkpoint_facts", "job_facts", "project_storage_daily"):
        op.execute(bi[view](dialect))


def _drop_views(*names: str) -> None:
    for name in names:
        op.execute(f"DROP VIEW IF EXISTS {name}")


def _history_columns(table: str, identity: tuple[str, ...], values: tuple[str, ...]) -> list[sa.Column]:  # type: ignore[type-arg]
    types: dict[str, sa.types.TypeEngine] = {  # type: ignore[type-arg]
        "id": BIGID if table == "checkpoints" else sa.Text(),
        "training_job_id": sa.Text(),
        "checkpoint_id": sa.Text(),
        "training_project_id": sa.Text(),
        "instance_type_id": sa.Text(),
        "lora_adapter_config_id": sa.BigInteger(),
        "memory_limit_mib": sa.BigInteger(),
        "millicpu_limit": sa.BigInteger(),
        "gpu_count": sa.Integer(),
        "gpu_memory_limit_mib": sa.BigInteger(),
        "priority": sa.BigInteger(),
        "size_bytes": sa.BigInteger(),
        "extra": JSON,
    }
    timestamps = {"created_at", "updated_at", "deleted_at"}
    not_null = set(identity) | {"training_project_id"}
    return [
        sa.Column(
            name, TS if name in timestamps else types.get(name, sa.Text()), nullable=name not in not_null
        )
        for name in (*identity, *values)
    ]


REFERENCES = {
    "training_project_history": {"id": "training_projects"},
    "instance_type_history": {"id": "instance_types"},
    "training_job_history": {
        "id": "training_jobs",
        "training_project_id": "training_projects",
        "instance_type_id": "instance_types",
    },
    "checkpoint_history": {
        "id": "checkpoints",
        "training_job_id": "training_jobs",
        "lora_adapter_config_id": "lora_adapter_configs",
    },
}


def _create_history_tables() -> None:
    for table, history, _, identity, values in VERSIONED:
        op.create_table(
            history,
            *_history_columns(table, identity, values),
            sa.Column("valid_from", TS, nullable=False),
            sa.Column("valid_to", TS, nullable=False),
            sa.PrimaryKeyConstraint("id", "valid_from", name=f"pk_{history}"),
            *(
                sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{history}_{column}")
                for column, target in REFERENCES[history].items()
            ),
        )


def _seed_history() -> None:
    """Reconstruct the earlier states the old schema can still tell."""
    for table, history, _, identity, values in VERSIONED:
        if "deleted_at" not in values or table == "training_jobs":
            continue
        live = [name if name != "deleted_at" else "NULL" for name in values]
        # A deleted row was live from its first sighting until its deletion.
        op.execute(
            f"INSERT INTO {history} ({', '.join((*identity, *values))}, valid_from, valid_to) "  # noqa: S608
            f"SELECT {', '.join((*identity, *live))}, first_seen_at, deleted_at FROM {table} "
            "WHERE deleted_at > first_seen_at"
        )
    # A job held each recorded status until the next one, or until its deletion.
    job_columns = ["j." + name for name in JOB_VALUES]
    job_columns[JOB_VALUES.index("current_status")] = "s.status"
    job_columns[JOB_VALUES.index("deleted_at")] = "NULL"
    op.execute(
        f"INSERT INTO training_job_history (id, {', '.join(JOB_VALUES)}, valid_from, valid_to) "  # noqa: S608
        f"SELECT j.id, {', '.join(job_columns)}, s.since, COALESCE(s.next_at, j.deleted_at) "
        "FROM ("
        "    SELECT training_job_id, status, observed_at AS since,"
        "           LEAD(observed_at) OVER (PARTITION BY training_job_id ORDER BY observed_at, id) AS next_at"
        "    FROM training_job_status_history"
        ") s JOIN training_jobs j ON j.id = s.training_job_id "
        "WHERE COALESCE(s.next_at, j.deleted_at) > s.since"
    )
    # A deleted job with no recorded status was live from its first sighting.
    live_job = ", ".join(name if name != "deleted_at" else "NULL" for name in JOB_VALUES)
    op.execute(
        f"INSERT INTO training_job_history (id, {', '.join(JOB_VALUES)}, valid_from, valid_to) "  # noqa: S608
        f"SELECT id, {live_job}, first_seen_at, deleted_at FROM training_jobs j "
        "WHERE deleted_at > first_seen_at AND NOT EXISTS "
        "(SELECT 1 FROM training_job_status_history h WHERE h.training_job_id = j.id)"
    )


def _create_versions_views() -> None:
    for table, history, versions, identity, values in VERSIONED:
        columns = ", ".join((*identity, *values))
        op.execute(
            f"CREATE VIEW {versions} AS "  # noqa: S608
            f"SELECT {columns}, valid_from, valid_to FROM {history} "
            f"UNION ALL SELECT {columns}, valid_from, NULL AS valid_to FROM {table}"
        )


def _status_changes(versions: str, distinct: str) -> str:
    """Each version of a job whose status differs from the version before (the first one included)."""
    return (
        "SELECT v.id AS training_job_id, v.current_status AS status, v.valid_from AS observed_at, "  # noqa: S608
        "(SELECT MIN(r.id) FROM sync_runs r WHERE r.started_at = v.valid_from) AS sync_run_id "
        "FROM ("
        "    SELECT id, current_status, valid_from,"
        "           LAG(current_status) OVER (PARTITION BY id ORDER BY valid_from) AS previous,"
        "           ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from) AS position"
        f"    FROM {versions}"
        f") v WHERE v.position = 1 OR v.previous {distinct} v.current_status"
    )


def _distinct() -> str:
    return "IS DISTINCT FROM" if op.get_bind().dialect.name == "postgresql" else "IS NOT"


def upgrade() -> None:
    _drop_views(*BI_VIEWS)
    for table, start in VALID_FROM.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("valid_from", TS))
        op.execute(f"UPDATE {table} SET valid_from = {start}")  # noqa: S608
        with op.batch_alter_table(table) as batch:
            batch.alter_column("valid_from", existing_type=TS, nullable=False)
    _create_history_tables()
    _seed_history()
    op.drop_table("training_job_status_history")
    _create_versions_views()
    op.execute(
        f"CREATE VIEW training_job_status_history AS {_status_changes('training_job_versions', _distinct())}"
    )
    _create_bi_views()


def downgrade() -> None:
    _drop_views(*BI_VIEWS)
    # Keep each status change as 0002 stored it, then put the table back under its name.
    op.create_table(
        "status_history_0002",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("training_job_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text()),
        sa.Column("observed_at", TS, nullable=False),
        sa.Column("sync_run_id", sa.BigInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_training_job_status_history"),
        sa.ForeignKeyConstraint(
            ["training_job_id"],
            ["training_jobs.id"],
            name="fk_training_job_status_history_training_job_id_training_jobs",
        ),
        sa.ForeignKeyConstraint(
            ["sync_run_id"], ["sync_runs.id"], name="fk_training_job_status_history_sync_run_id_sync_runs"
        ),
    )
    op.execute(
        "INSERT INTO status_history_0002 (training_job_id, status, observed_at, sync_run_id) "
        "SELECT training_job_id, status, observed_at, sync_run_id FROM training_job_status_history "
        "ORDER BY observed_at, training_job_id"
    )
    _drop_views("training_job_status_history", *(versions for _, _, versions, _, _ in VERSIONED))
    op.rename_table("status_history_0002", "training_job_status_history")
    op.create_index(
        "ix_training_job_status_history_training_job_id",
        "training_job_status_history",
        ["training_job_id", "observed_at"],
    )
    for _, history, _, _, _ in reversed(VERSIONED):
        op.drop_table(history)
    for table in VALID_FROM:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("valid_from")
    _create_bi_views()
