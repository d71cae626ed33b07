"""An index on `checkpoint_lora_modules.job_id`: a sync replaces a job's rows without reading every row.

Why: (issue 21) a sync rewrites the LoRA-module rows of the jobs it wrote, job by job (`DELETE FROM
checkpoint_lora_modules WHERE job_id IN (...)`, then the view's rows), and the table had no index on
`job_id`: each batch read the whole table, 2.7 rows a checkpoint. A first load of the 92,520-checkpoint
benchmark organisation into SQLite spent 0.44 s in those 23 deletes, which found nothing; with the index
they take no measurable time, and the inserts 0.19 s more (1.11 s). A night that reads a few jobs again
no longer scans the table at all. The rows are unchanged.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # As revision 0014 indexed the facts tables: SQL of its own, as these tables are not in the models.
    op.execute("CREATE INDEX ix_checkpoint_lora_modules_job_id ON checkpoint_lora_modules (job_id)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_checkpoint_lora_modules_job_id")
