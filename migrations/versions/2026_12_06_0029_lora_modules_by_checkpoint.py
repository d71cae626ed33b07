"""`checkpoint_lora_modules` is indexed by checkpoint, that is by job and checkpoint id, in one index.

Why: (issue 21) the table had an index on `checkpoint_id` alone (revision 0014) and one on `job_id`
(revision 0024, for a sync's `DELETE ... WHERE job_id IN (...)`). A checkpoint id is unique only within
its job (`checkpoint-50` names a checkpoint of nearly every job), so the first answered no question
the second could not narrow, and keeping both up to date was the dearest part of writing the table: a
sync writes its rows job by job, 2.7 a checkpoint. One index on `(job_id, checkpoint_id)` finds a job's
rows (its first column) and one checkpoint's (both). Rewriting the rows of the benchmark's 2,000 jobs
(250,189 rows) in batches of 105 jobs into SQLite: 0.96-0.98 s with the two indexes, 0.60-0.61 s with
the one. In a first load's sync, those inserts took 1.24-1.65 s before and 0.83-1.05 s after on SQLite
(three runs each), 1.04-1.14 s and 0.95-1.01 s on PostgreSQL (two each). The index on `module` (filters
and facets by module) stays. The rows are unchanged.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # As revisions 0014 and 0024 indexed the facts tables: SQL of its own, as they are not in the models.
    op.execute(
        "CREATE INDEX ix_checkpoint_lora_modules_job_id_checkpoint_id "
        "ON checkpoint_lora_modules (job_id, checkpoint_id)"
    )
    op.execute("DROP INDEX ix_checkpoint_lora_modules_job_id")
    op.execute("DROP INDEX ix_checkpoint_lora_modules_checkpoint_id")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_checkpoint_lora_modules_checkpoint_id ON checkpoint_lora_modules (checkpoint_id)"
    )
    op.execute("CREATE INDEX ix_checkpoint_lora_modules_job_id ON checkpoint_lora_modules (job_id)")
    op.execute("DROP INDEX ix_checkpoint_lora_modules_job_id_checkpoint_id")
