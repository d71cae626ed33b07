"""`job_facts_live` looks up each job's latest checkpoint through an index, instead of ranking every checkpoint.

Why: (issue 21) every sync rewrites `job_facts`, whose hours count up to the refresh, and its view
numbered every checkpoint of the archive with a window function to keep the first of each job: the
largest part of the rewrite, and of an unchanged night's. Each job's latest checkpoint is now found
through the (training_job_id, checkpoint_id) index, in the same order (undated last on both databases,
then the latest `created_at`, then the highest id), so the same row comes back. On PostgreSQL each
job's current status version is also taken with `DISTINCT ON` rather than by filtering a window's
row numbers: the planner took that for a handful of rows, and with the lookup it joined them to the
jobs by a nested loop (4 million comparisons at 2,000 jobs). Computing the view over 92,520
checkpoints, five times each: SQLite 214-220 to 114-115 ms, PostgreSQL 158-167 to 127-139 ms. Its
columns and rows are unchanged; on PostgreSQL it is replaced in place, keeping its grants and
description.

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


# PostgreSQL: each job's current status version by DISTINCT ON, which the planner counts right.
RANKED_START = """\
    SELECT
        id,
        updated_at,
        valid_from,
        previous_from,
        ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from DESC) AS recency
    FROM job_versions
    WHERE position = 1 OR previous_status IS DISTINCT FROM current_status
),"""

DISTINCT_START = """\
    SELECT DISTINCT ON (id)
        id,
        updated_at,
        valid_from,
        previous_from
    FROM job_versions
    WHERE position = 1 OR previous_status IS DISTINCT FROM current_status
    ORDER BY id, valid_from DESC
),"""

LATEST_START = "    JOIN training_jobs j ON j.id = s.id\n    WHERE s.recency = 1\n"


def job_facts(postgresql: bool, *, looked_up: bool) -> str:
    """`CREATE VIEW job_facts_live` as revision 0014 made it, or as this one makes it."""
    sql = str(v14._renamed(v13.job_facts(v9.PostgreSQL if postgresql else v9.SQLite), "job_facts"))
    if not looked_up:
        return sql
    sql = v13._replace(sql, RANKED, LOOKED_UP)
    if postgresql:
        sql = v13._replace(sql, RANKED_START, DISTINCT_START)
        sql = v13._replace(sql, LATEST_START, "    JOIN training_jobs j ON j.id = s.id\n")
    return str(sql)


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
