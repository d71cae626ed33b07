"""Keep every API response a run acted on, and the options that shaped the run.

Why: the API only shows the present, and the archive kept only what the archiver parsed out of
it: envelope fields, unknown keys in nested objects and whatever a parser bug dropped were lost
(issue 9). Now each response a run used (its method, path, status and body, the API key masked)
is kept: `api_responses` has a row per response, `api_response_bodies` each distinct body once,
compressed, so an unchanged night costs a small row per request. With `sync_runs.options` (what
besides scope and --full decided what a run archived) `archiver rebuild` can replay the archive
from them, through the same code: that is also how a parser fix reaches the past.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import runpy
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _alter_table(table: str, change: Callable[[BatchOperations], None]) -> None:
    """Revision 0005's `alter_table`, which sets SQLite's views aside for a batch rebuild."""
    runpy.run_path(str(next(Path(__file__).parent.glob("*_0005_skip_state.py"))))["alter_table"](
        table, change
    )


def upgrade() -> None:
    op.create_table(
        "api_response_bodies",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("encoding", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text()),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_response_bodies"),
        sa.UniqueConstraint("sha256", name="uq_api_response_bodies_sha256"),
    )
    op.create_table(
        "api_responses",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("sync_run_id", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("request_body", sa.Text()),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_responses"),
        sa.ForeignKeyConstraint(
            ["sync_run_id"], ["sync_runs.id"], name="fk_api_responses_sync_run_id_sync_runs"
        ),
        sa.ForeignKeyConstraint(
            ["body_id"], ["api_response_bodies.id"], name="fk_api_responses_body_id_api_response_bodies"
        ),
    )
    op.create_index("ix_api_responses_sync_run_id", "api_responses", ["sync_run_id"])
    _alter_table("sync_runs", lambda batch: batch.add_column(sa.Column("options", JSON)))


def downgrade() -> None:
    _alter_table("sync_runs", lambda batch: batch.drop_column("options"))
    op.drop_table("api_responses")
    op.drop_table("api_response_bodies")
