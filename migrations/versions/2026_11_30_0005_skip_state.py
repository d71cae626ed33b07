"""Remember the job's status at the last full read of its checkpoints.

Why: the incremental sync skipped a terminal job whose `updated_at` had not moved since a read
that found all its checkpoints complete. A job read while RUNNING, then COMPLETED with one more
checkpoint and the same `updated_at`, was skipped and its last checkpoint never fetched (issue 9).
The skip now also needs the status to be the one seen at that read. Archives upgraded to this
revision have no such status yet, so their next run reads every job once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def alter_table(table: str, change: Callable[[BatchOperations], None]) -> None:
    """Alter a table in batch mode with the views set aside (later revisions import this one).

    On SQLite, batch mode rebuilds a table by copying it and renaming the copy, which SQLite
    refuses while a view names the table: the views are dropped first and recreated, as they
    were, afterwards.
    """
    bind = op.get_bind()
    views: list[tuple[str, str]] = []
    if bind.dialect.name == "sqlite":
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY rowid"
        views = [(name, sql) for name, sql in bind.exec_driver_sql(query)]
        for name, _ in reversed(views):
            op.execute(f'DROP VIEW "{name}"')
    with op.batch_alter_table(table) as batch:
        change(batch)
    for _, create in views:
        op.execute(create)


def upgrade() -> None:
    alter_table(
        "training_jobs",
        lambda batch: batch.add_column(sa.Column("checkpoints_fetched_job_status", sa.Text())),
    )


def downgrade() -> None:
    alter_table("training_jobs", lambda batch: batch.drop_column("checkpoints_fetched_job_status"))
