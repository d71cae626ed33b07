"""An index on `training_projects.name`: the facts tables' project labels stop scanning every project.

Why: (issue 21) each facts row's `project_label` asks whether another project has the same name
(`EXISTS (SELECT 1 FROM training_projects o WHERE o.name = p.name AND o.id <> p.id)`, revision 0013),
once per row. Without an index SQLite answers it by reading every project, for every checkpoint,
LoRA module and day: on a 188,987-checkpoint archive of 80 projects, the refresh at the end of a sync
spent 7.6 s rewriting the facts tables, 6.0 s with this index (`checkpoint_facts` 1.8 s to 1.3 s,
`gpu_hours_daily` 3.4 s to 2.6 s). The views and their rows are unchanged.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_training_projects_name", "training_projects", ["name"])


def downgrade() -> None:
    op.drop_index("ix_training_projects_name", table_name="training_projects")
