"""An index of the checkpoints marked deleted, and of those alone: the nightly drain check stops reading them all.

Why: (issue 21) every sync, after judging what vanished, asks whether any job or project lost `MASS`
checkpoints within the drain window (`drain._lost_enough`: `WHERE checkpoints.deleted_at > :since`).
Without an index both databases read every checkpoint for it, every night, unchanged or not: at 92,520
checkpoints 22-25 ms on SQLite and 18-21 ms on PostgreSQL, growing with the archive. With this one,
0.5-1.2 ms and 1.6-2.1 ms. It is partial (`WHERE deleted_at IS NOT NULL`): a live checkpoint, as
every new one is, has no entry in it, so writing checkpoints costs nothing more. Both databases use a
partial index for a comparison on its column, which a null never passes.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELETED = "deleted_at IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_checkpoints_deleted_at",
        "checkpoints",
        ["deleted_at"],
        sqlite_where=sa.text(DELETED),
        postgresql_where=sa.text(DELETED),
    )


def downgrade() -> None:
    op.drop_index("ix_checkpoints_deleted_at", table_name="checkpoints")
