"""`facts_inputs`: what each facts table's inputs were when it was last rewritten.

Why: (issue 21) the rewrite of every facts table at the end of each sync made an unchanged night
slower than the whole sync before it (1.2 s on SQLite, 2.7 s on PostgreSQL at 46,000 checkpoints;
about 28 s of the 50 s at 950,000 are `checkpoint_facts` and `checkpoint_lora_modules`). Those two
depend on nothing but the rows they are computed from, so a sync leaves them as they are when a
fingerprint of those rows (counts, and the latest of each run stamp: every write of a run stamps
its start, and run starts only increase) is the one recorded at their last rewrite. The tables that
depend on the time (hours in a status, running jobs, today's storage) are rewritten at every sync.
Bookkeeping: on PostgreSQL it lives in schema `archiver_internal` (revision 0017).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "facts_inputs"


def _schema() -> str | None:
    return "archiver_internal" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_facts_inputs"),
        schema=_schema(),
    )


def downgrade() -> None:
    op.drop_table(TABLE, schema=_schema())
