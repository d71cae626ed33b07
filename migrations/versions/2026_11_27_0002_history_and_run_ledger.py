"""Add history: deletions, job status history, the sync run ledger and incremental-sync marks.

Why: a nightly archive must answer "what existed when" (issue 3). Rows are never deleted: a
project, job or checkpoint that disappears from the API gets `deleted_at`. Each status change of
a job is a row in `training_job_status_history`; every run is a row in `sync_runs`, every failure
a row in `sync_errors`. The `checkpoints_*` columns on jobs let a run skip jobs that cannot have
changed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FLAG = sa.Boolean(create_constraint=False)


def counter(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Integer(), nullable=False, server_default="0")


def upgrade() -> None:
    for table in ("training_projects", "training_jobs", "checkpoints"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("deleted_at", TS))
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("checkpoints_fetched_at", TS))
        batch.add_column(sa.Column("checkpoints_fetched_job_updated_at", TS))
        batch.add_column(sa.Column("checkpoints_all_complete", FLAG))

    op.create_table(
        "sync_runs",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("scope", JSON),
        sa.Column("full_sync", FLAG, nullable=False),
        *(
            counter(name)
            for name in (
                "projects",
                "jobs",
                "jobs_fetched",
                "jobs_skipped",
                "jobs_failed",
                "checkpoints_inserted",
                "checkpoints_updated",
                "checkpoints_unchanged",
                "checkpoints_deleted",
                "requests",
            )
        ),
        sa.Column("error_summary", sa.Text()),
        sa.Column("archiver_version", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text()),
        sa.Column("pid", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="pk_sync_runs"),
    )
    op.create_index("ix_sync_runs_started_at", "sync_runs", ["started_at"])
    op.create_table(
        "sync_errors",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("sync_run_id", sa.BigInteger(), nullable=False),
        sa.Column("project_id", sa.Text()),
        sa.Column("job_id", sa.Text()),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_errors"),
        sa.ForeignKeyConstraint(
            ["sync_run_id"], ["sync_runs.id"], name="fk_sync_errors_sync_run_id_sync_runs"
        ),
    )
    op.create_index("ix_sync_errors_sync_run_id", "sync_errors", ["sync_run_id"])
    op.create_table(
        "training_job_status_history",
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
    op.create_index(
        "ix_training_job_status_history_training_job_id",
        "training_job_status_history",
        ["training_job_id", "observed_at"],
    )
    # Jobs archived before this revision: their current status is their first recorded one.
    op.execute(
        "INSERT INTO training_job_status_history (training_job_id, status, observed_at) "
        "SELECT id, current_status, last_seen_at FROM training_jobs"
    )


def downgrade() -> None:
    op.drop_table("training_job_status_history")
    op.drop_table("sync_errors")
    op.drop_table("sync_runs")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("checkpoints_all_complete")
        batch.drop_column("checkpoints_fetched_job_updated_at")
        batch.drop_column("checkpoints_fetched_at")
    for table in ("checkpoints", "training_jobs", "training_projects"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("deleted_at")
