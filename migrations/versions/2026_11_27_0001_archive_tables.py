"""Create the archive tables: projects, instance types, jobs, LoRA configs, checkpoints.

Why: the first schema of the archive (issue 2). Timestamps are timezone-aware; JSON is JSONB
on PostgreSQL so unchanged documents compare equal; every constraint is named.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in archiver.schema: revisions never import the live schema.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def seen() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "training_projects",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("team_name", sa.Text()),
        sa.Column("created_at", TS),
        sa.Column("updated_at", TS),
        sa.Column("extra", JSON),
        *seen(),
        sa.PrimaryKeyConstraint("id", name="pk_training_projects"),
    )
    op.create_table(
        "instance_types",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("memory_limit_mib", sa.BigInteger()),
        sa.Column("millicpu_limit", sa.BigInteger()),
        sa.Column("gpu_count", sa.Integer()),
        sa.Column("gpu_type", sa.Text()),
        sa.Column("gpu_memory_limit_mib", sa.BigInteger()),
        sa.Column("extra", JSON),
        *seen(),
        sa.PrimaryKeyConstraint("id", name="pk_instance_types"),
    )
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("training_project_id", sa.Text(), nullable=False),
        sa.Column("instance_type_id", sa.Text()),
        sa.Column("name", sa.Text()),
        sa.Column("current_status", sa.Text()),
        sa.Column("error_message", sa.Text()),
        sa.Column("checkpoint_sync_status", sa.Text()),
        sa.Column("priority", sa.BigInteger()),
        sa.Column("user_email", sa.Text()),
        sa.Column("availability_model", sa.Text()),
        sa.Column("created_at", TS),
        sa.Column("updated_at", TS),
        sa.Column("extra", JSON),
        *seen(),
        sa.PrimaryKeyConstraint("id", name="pk_training_jobs"),
        sa.ForeignKeyConstraint(
            ["training_project_id"],
            ["training_projects.id"],
            name="fk_training_jobs_training_project_id_training_projects",
        ),
        sa.ForeignKeyConstraint(
            ["instance_type_id"],
            ["instance_types.id"],
            name="fk_training_jobs_instance_type_id_instance_types",
        ),
    )
    op.create_index("ix_training_jobs_training_project_id", "training_jobs", ["training_project_id"])
    op.create_table(
        "lora_adapter_configs",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("config_sha256", sa.String(64), nullable=False),
        sa.Column("r", sa.BigInteger()),
        sa.Column("lora_alpha", sa.Float()),
        sa.Column("lora_dropout", sa.Float()),
        sa.Column("target_modules", JSON),
        sa.Column("task_type", sa.Text()),
        sa.Column("peft_type", sa.Text()),
        sa.Column("base_model_name_or_path", sa.Text()),
        sa.Column("config", JSON, nullable=False),
        *seen(),
        sa.PrimaryKeyConstraint("id", name="pk_lora_adapter_configs"),
        sa.UniqueConstraint("config_sha256", name="uq_lora_adapter_configs_config_sha256"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("training_job_id", sa.Text(), nullable=False),
        sa.Column("checkpoint_id", sa.Text(), nullable=False),
        sa.Column("created_at", TS),
        sa.Column("checkpoint_type", sa.Text()),
        sa.Column("base_model", sa.Text()),
        sa.Column("lora_adapter_config_id", sa.BigInteger()),
        sa.Column("size_bytes", sa.BigInteger()),
        sa.Column("sync_status", sa.Text()),
        sa.Column("extra", JSON),
        *seen(),
        sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
        sa.UniqueConstraint(
            "training_job_id", "checkpoint_id", name="uq_checkpoints_training_job_id_checkpoint_id"
        ),
        sa.ForeignKeyConstraint(
            ["training_job_id"], ["training_jobs.id"], name="fk_checkpoints_training_job_id_training_jobs"
        ),
        sa.ForeignKeyConstraint(
            ["lora_adapter_config_id"],
            ["lora_adapter_configs.id"],
            name="fk_checkpoints_lora_adapter_config_id_lora_adapter_configs",
        ),
    )
    op.create_index("ix_checkpoints_lora_adapter_config_id", "checkpoints", ["lora_adapter_config_id"])


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_table("lora_adapter_configs")
    op.drop_table("training_jobs")
    op.drop_table("instance_types")
    op.drop_table("training_projects")
