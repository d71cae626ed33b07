"""`gpu_hours_daily`: the GPU-hours each job spent on each UTC day, for "GPU-hours this month".

Why: `job_facts.gpu_hours_estimate` puts a whole run in its creation month and gives nothing for
running jobs, so "GPU-hours this month" had no correct answer (issue 22). This view splits each
run across the UTC days it ran: from the job's `created_at` to its `updated_at` once it finished
(as `job_facts.wall_clock_hours` counts it), or, while it runs, to the last sync that saw it. GPUs
are the instance type's per node times the job's nodes (`node_count` as sent, else the nodes its
instance type names, else 1, as in `job_facts`). Summed over its days, a finished job's
`gpu_hours` is its `job_facts.gpu_hours_estimate`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import op
from alembic.util import load_python_file

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v3, v9 = _load("0003"), _load("0009")


class PostgreSQL(v9.PostgreSQL):  # type: ignore[misc,name-defined]
    @staticmethod
    def day_start(day: str) -> str:
        return f"(CAST({day} AS TIMESTAMP) AT TIME ZONE 'UTC')"


class SQLite(v9.SQLite):  # type: ignore[misc,name-defined]
    @staticmethod
    def day_start(day: str) -> str:
        return f"({day} || ' 00:00:00.000000')"  # the stored spelling of midnight (revision 0011)


def gpu_hours_daily(d: Any) -> str:
    start_of_next = d.day_start(d.next_day("s.day"))
    ran_from = d.latest("r.run_from", d.day_start("s.day"))
    ran_to = d.earliest("r.run_to", start_of_next)
    return f"""CREATE VIEW gpu_hours_daily AS
WITH RECURSIVE runs AS (
    SELECT
        j.id AS job_id,
        j.created_at AS run_from,
        CASE WHEN j.current_status IN ({v3.TERMINAL_STATUSES})
            THEN COALESCE(j.updated_at, j.last_seen_at)
            ELSE j.last_seen_at
        END AS run_to,
        COALESCE(j.node_count, it.nodes, 1) AS node_count
    FROM training_jobs j
    LEFT JOIN instance_types it ON it.id = j.instance_type_id
    WHERE j.created_at IS NOT NULL
),
spans AS (
    SELECT job_id, run_from, run_to, node_count FROM runs WHERE run_to > run_from
),
days AS (
    SELECT job_id, {d.utc_day("run_from")} AS day FROM spans
    UNION ALL
    SELECT s.job_id, {d.next_day("s.day")}
    FROM days s
    JOIN spans r ON r.job_id = s.job_id
    WHERE {start_of_next} < r.run_to
)
SELECT
    s.day AS day,
    p.id AS project_id,
    p.name AS project_name,
    p.team_name AS team_name,
    j.id AS job_id,
    j.name AS job_name,
    j.current_status AS job_status,
    j.instance_type_id AS instance_type_id,
    it.name AS instance_type_name,
    it.gpu_type AS gpu_type,
    it.gpu_count AS gpu_count,
    r.node_count AS node_count,
    -- A BIGINT product: two 32-bit counts can overflow INTEGER on PostgreSQL.
    CAST(it.gpu_count AS BIGINT) * r.node_count AS total_gpu_count,
    {d.hours_between(ran_from, ran_to)} AS hours,
    -- Hours first: PostgreSQL would multiply the two counts as 32-bit integers, which can overflow.
    {d.hours_between(ran_from, ran_to)} * it.gpu_count * r.node_count AS gpu_hours
FROM days s
JOIN spans r ON r.job_id = s.job_id
JOIN training_jobs j ON j.id = s.job_id
JOIN training_projects p ON p.id = j.training_project_id
LEFT JOIN instance_types it ON it.id = j.instance_type_id
"""  # noqa: S608 (constant fragments, no input)


def upgrade() -> None:
    dialect = PostgreSQL if op.get_bind().dialect.name == "postgresql" else SQLite
    op.execute(gpu_hours_daily(dialect))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS gpu_hours_daily")
