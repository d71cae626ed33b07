"""`training_job_status_history.sync_run_id` has a declared type on SQLite.

Why: (issue 22) it was the one column a reader sees that SQLite reported without a type: the run was
found by a scalar subquery, `(SELECT MIN(r.id) ...)`, and SQLite declares a type only for a column
read straight from a table. The view now joins the run that started at the version's instant (the
first such run, as before), so the column is `sync_runs.id` itself: INTEGER on SQLite, bigint on
PostgreSQL as before. The rows are unchanged.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW = "training_job_status_history"


def _changes(run: str, joined: str) -> str:
    """0004's view of each version whose status differs from the one before, the run found by `run`."""
    distinct = "IS DISTINCT FROM" if op.get_bind().dialect.name == "postgresql" else "IS NOT"
    return (
        f"CREATE VIEW {VIEW} AS "  # noqa: S608
        f"SELECT v.id AS training_job_id, v.current_status AS status, v.valid_from AS observed_at, {run} AS sync_run_id "
        "FROM ("
        "    SELECT id, current_status, valid_from,"
        "           LAG(current_status) OVER (PARTITION BY id ORDER BY valid_from) AS previous,"
        "           ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from) AS position"
        "    FROM training_job_versions"
        f") v {joined}WHERE v.position = 1 OR v.previous {distinct} v.current_status"
    )


def upgrade() -> None:
    op.execute(f"DROP VIEW {VIEW}")
    op.execute(
        _changes(
            "r.id",
            "LEFT JOIN sync_runs r ON r.started_at = v.valid_from AND NOT EXISTS "
            "(SELECT 1 FROM sync_runs earlier WHERE earlier.started_at = r.started_at AND earlier.id < r.id) ",
        )
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW {VIEW}")
    op.execute(_changes("(SELECT MIN(r.id) FROM sync_runs r WHERE r.started_at = v.valid_from)", ""))
