"""`job_facts_live` looks up each job's latest checkpoint through an index, instead of ranking every checkpoint.

Why: (issue 21) every sync rewrites `job_facts`, whose hours count up to the refresh, and its view
numbered every checkpoint of the archive with a window function to keep the first of each job: the
largest part of the rewrite, and of an unchanged night's. Each job's latest checkpoint is now found
through the (training_job_id, checkpoint_id) index, in the same order (undated last on both databases,
then the latest `created_at`, then the highest id), so the same row comes back. That part took 114 ms
on a 92,520-checkpoint SQLite archive and takes 31 ms; 42 and 31 ms on PostgreSQL at 46,238.
The view's columns and rows are unchanged; on PostgreSQL it is replaced in place, keeping its grants.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op
from alembic.util import load_python_file

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v9, v13, v14 = _load("0009"), _load("0013"), _load("0014")

RANKED = """\
latest_checkpoint AS (
    SELECT training_job_id, checkpoint_id, size_bytes
    FROM (
        SELECT
            training_job_id,
            checkpoint_id,
            size_bytes,
            -- Undated checkpoints last on both databases (PostgreSQL sorts NULL first in DESC).
            ROW_NUMBER() OVER (
                PARTITION BY training_job_id ORDER BY CASE WHEN created_at IS NULL THEN 1 ELSE 0 END, created_at DESC, id DESC
            ) AS position
        FROM checkpoints
    ) ranked
    WHERE position = 1
),"""

LOOKED_UP = """\
latest_checkpoint AS (
    -- Each job's first checkpoint in this order, found through the index on training_job_id.
    -- Undated checkpoints last on both databases (PostgreSQL sorts NULL first in DESC).
    SELECT c.training_job_id, c.checkpoint_id, c.size_bytes
    FROM training_jobs lj
    JOIN checkpoints c ON c.id = (
        SELECT l.id
        FROM checkpoints l
        WHERE l.training_job_id = lj.id
        ORDER BY CASE WHEN l.created_at IS NULL THEN 1 ELSE 0 END, l.created_at DESC, l.id DESC
        LIMIT 1
    )
),"""


def job_facts(postgresql: bool, *, looked_up: bool) -> str:
    """`CREATE VIEW job_facts_live` as revision 0014 made it, or with the latest checkpoint looked up."""
    sql = str(v14._renamed(v13.job_facts(v9.PostgreSQL if postgresql else v9.SQLite), "job_facts"))
    return str(v13._replace(sql, RANKED, LOOKED_UP)) if looked_up else sql


def _recreate(*, looked_up: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    sql = job_facts(postgresql, looked_up=looked_up)
    if postgresql:  # in place, in the schema revision 0017 moved it to: grants and description stay
        head = "CREATE VIEW job_facts_live AS"
        op.execute(sql.replace(head, "CREATE OR REPLACE VIEW archiver_internal.job_facts_live AS", 1))
    else:
        op.execute("DROP VIEW job_facts_live")
        op.execute(sql)


def upgrade() -> None:
    _recreate(looked_up=True)


def downgrade() -> None:
    _recreate(looked_up=False)
