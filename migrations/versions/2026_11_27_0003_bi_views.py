"""Add the BI views: checkpoint_facts, job_facts, project_storage_daily.

Why: the archive exists to be queried (issue 6). Analysts and BI tools should not have to
rediscover the joins, the units or the "is it still there" rule: these views give one row per
checkpoint, one row per job and one row per project per UTC day, with the same columns, names and
meanings on SQLite and PostgreSQL. The SQL is one template; only date and JSON functions differ
per dialect. It is frozen here: a later change to a view is a new revision that recreates it.

A checkpoint counts as deleted from the moment the archiver noticed that it, its job or its
project had gone from the API (the earliest of the three `deleted_at`), since deleting a project
on Baseten deletes everything in it.

A later revision that rebuilds or alters a table these views read must drop the views first and
recreate them after: SQLite's batch mode renames tables, which fails while a view names a missing
table, and PostgreSQL refuses to drop a column a view uses.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("checkpoint_facts", "job_facts", "project_storage_daily")  # in dependency order

TERMINAL_STATUSES = (
    "'TRAINING_JOB_COMPLETED', 'TRAINING_JOB_FAILED', 'TRAINING_JOB_STOPPED', 'TRAINING_JOB_DEPLOY_FAILED'"
)
GIB = "1073741824"


class PostgreSQL:
    """The few expressions the dialects spell differently."""

    now = "CURRENT_TIMESTAMP"
    # The session time zone must not move a day boundary: every day is a UTC day.
    today = "CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS DATE)"

    @staticmethod
    def utc_day(ts: str) -> str:
        return f"CAST({ts} AT TIME ZONE 'UTC' AS DATE)"

    @staticmethod
    def next_day(day: str) -> str:
        return f"{day} + 1"

    @staticmethod
    def hours_between(start: str, end: str) -> str:
        return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS DOUBLE PRECISION) / 3600"

    @staticmethod
    def earliest(*values: str) -> str:
        return f"LEAST({', '.join(values)})"  # LEAST ignores NULLs

    @staticmethod
    def latest(*values: str) -> str:
        return f"GREATEST({', '.join(values)})"

    @staticmethod
    def json_count(document: str, key: str) -> str:
        return (
            f"CASE WHEN jsonb_typeof({document} -> '{key}') = 'number' "
            f"AND ({document} ->> '{key}') ~ '^[1-9][0-9]{{0,5}}$' "
            f"THEN CAST({document} ->> '{key}' AS INTEGER) END"
        )


class SQLite:
    """SQLite holds timestamps as naive-UTC text, which sorts and compares as time does."""

    now = "'now'"
    today = "date('now')"

    @staticmethod
    def utc_day(ts: str) -> str:
        return f"date({ts})"

    @staticmethod
    def next_day(day: str) -> str:
        return f"date({day}, '+1 day')"

    @staticmethod
    def hours_between(start: str, end: str) -> str:
        return f"(julianday({end}) - julianday({start})) * 24"

    @staticmethod
    def earliest(*values: str) -> str:
        # SQLite's multi-argument min() is NULL if any argument is; '~' sorts after every timestamp.
        coalesced = ", ".join(f"COALESCE({value}, '~')" for value in values)
        return f"NULLIF(min({coalesced}), '~')"

    @staticmethod
    def latest(*values: str) -> str:
        return f"max({', '.join(values)})"

    @staticmethod
    def json_count(document: str, key: str) -> str:
        return (
            f"CASE WHEN json_type({document}, '$.{key}') = 'integer' "
            f"AND json_extract({document}, '$.{key}') BETWEEN 1 AND 999999 "
            f"THEN json_extract({document}, '$.{key}') END"
        )


Dialect = type[PostgreSQL] | type[SQLite]


def checkpoint_facts(d: Dialect) -> str:
    return f"""
CREATE VIEW checkpoint_facts AS
SELECT
    p.id AS project_id,
    p.name AS project_name,
    p.team_name AS team_name,
    j.id AS job_id,
    j.name AS job_name,
    c.checkpoint_id AS checkpoint_id,
    c.checkpoint_type AS checkpoint_type,
    c.created_at AS created_at,
    c.size_bytes AS size_bytes,
    CAST(c.size_bytes AS DOUBLE PRECISION) / {GIB} AS size_gib,
    c.sync_status AS sync_status,
    c.base_model AS base_model,
    l.r AS lora_r,
    l.lora_alpha AS lora_alpha,
    l.lora_dropout AS lora_dropout,
    l.target_modules AS lora_target_modules,
    j.current_status AS job_status,
    j.user_email AS job_creator_email,
    j.created_at AS job_created_at,
    it.name AS instance_type_name,
    it.gpu_type AS gpu_type,
    it.gpu_count AS gpu_count,
    c.first_seen_at AS first_seen_at,
    -- A live checkpoint was seen at every full read of its job's checkpoints (its row is
    -- only written when it changes); a deleted one's last sighting is in its row.
    CASE WHEN c.deleted_at IS NULL
        THEN COALESCE({d.latest("c.last_seen_at", "j.checkpoints_fetched_at")}, c.last_seen_at)
        ELSE c.last_seen_at
    END AS last_seen_at,
    {d.earliest("c.deleted_at", "j.deleted_at", "p.deleted_at")} AS deleted_at,
    p.deleted_at AS project_deleted_at
FROM checkpoints c
JOIN training_jobs j ON j.id = c.training_job_id
JOIN training_projects p ON p.id = j.training_project_id
LEFT JOIN instance_types it ON it.id = j.instance_type_id
LEFT JOIN lora_adapter_configs l ON l.id = c.lora_adapter_config_id
"""  # noqa: S608 (constant fragments, no input)


def job_facts(d: Dialect) -> str:
    return f"""
CREATE VIEW job_facts AS
WITH status_since AS (
    -- The first sighting of the job's current status after the last sighting of any other.
    SELECT h.training_job_id AS job_id, MIN(h.observed_at) AS since
    FROM training_job_status_history h
    JOIN training_jobs j ON j.id = h.training_job_id
    WHERE h.status = j.current_status
      AND NOT EXISTS (
          SELECT 1 FROM training_job_status_history later
          WHERE later.training_job_id = h.training_job_id
            AND later.observed_at > h.observed_at
            AND (later.status <> j.current_status OR later.status IS NULL)
      )
    GROUP BY h.training_job_id
),
checkpoint_totals AS (
    SELECT
        job_id,
        COUNT(*) AS checkpoint_count,
        SUM(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END) AS live_checkpoint_count,
        CAST(SUM(size_bytes) AS BIGINT) AS checkpoints_size_bytes,
        CAST(SUM(CASE WHEN deleted_at IS NULL THEN size_bytes ELSE 0 END) AS BIGINT) AS live_size_bytes,
        MIN(created_at) AS first_checkpoint_at,
        MAX(created_at) AS last_checkpoint_at
    FROM checkpoint_facts
    GROUP BY job_id
),
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
),
jobs AS (
    SELECT
        j.*,
        COALESCE({d.json_count("j.extra", "node_count")}, 1) AS node_count,
        CASE WHEN j.current_status IN ({TERMINAL_STATUSES})
             THEN {d.hours_between("j.created_at", "j.updated_at")} END AS wall_clock_hours
    FROM training_jobs j
)
SELECT
    j.id AS job_id,
    j.name AS job_name,
    p.id AS project_id,
    p.name AS project_name,
    p.team_name AS team_name,
    j.current_status AS job_status,
    s.since AS job_status_since,
    {d.hours_between("s.since", d.now)} AS hours_in_status,
    j.error_message AS error_message,
    j.checkpoint_sync_status AS checkpoint_sync_status,
    j.user_email AS creator_email,
    it.name AS instance_type_name,
    it.gpu_type AS gpu_type,
    it.gpu_count AS gpu_count,
    j.node_count AS node_count,
    j.created_at AS created_at,
    j.updated_at AS updated_at,
    {d.hours_between("j.updated_at", d.now)} AS hours_since_update,
    COALESCE(t.checkpoint_count, 0) AS checkpoint_count,
    COALESCE(t.live_checkpoint_count, 0) AS live_checkpoint_count,
    COALESCE(t.checkpoints_size_bytes, 0) AS checkpoints_size_bytes,
    CAST(COALESCE(t.checkpoints_size_bytes, 0) AS DOUBLE PRECISION) / {GIB} AS checkpoints_size_gib,
    COALESCE(t.live_size_bytes, 0) AS live_size_bytes,
    CAST(COALESCE(t.live_size_bytes, 0) AS DOUBLE PRECISION) / {GIB} AS live_size_gib,
    lc.checkpoint_id AS latest_checkpoint_id,
    lc.size_bytes AS latest_checkpoint_size_bytes,
    CAST(lc.size_bytes AS DOUBLE PRECISION) / {GIB} AS latest_checkpoint_size_gib,
    t.first_checkpoint_at AS first_checkpoint_at,
    t.last_checkpoint_at AS last_checkpoint_at,
    {d.hours_between("j.created_at", "t.first_checkpoint_at")} AS hours_to_first_checkpoint,
    j.wall_clock_hours AS wall_clock_hours,
    -- Hours first: PostgreSQL would multiply the two counts as 32-bit integers, which can overflow.
    j.wall_clock_hours * it.gpu_count * j.node_count AS gpu_hours_estimate,
    j.first_seen_at AS first_seen_at,
    j.last_seen_at AS last_seen_at,
    {d.earliest("j.deleted_at", "p.deleted_at")} AS deleted_at,
    p.deleted_at AS project_deleted_at
FROM jobs j
JOIN training_projects p ON p.id = j.training_project_id
LEFT JOIN instance_types it ON it.id = j.instance_type_id
LEFT JOIN status_since s ON s.job_id = j.id
LEFT JOIN checkpoint_totals t ON t.job_id = j.id
LEFT JOIN latest_checkpoint lc ON lc.training_job_id = j.id
"""  # noqa: S608 (constant fragments, no input)


def project_storage_daily(d: Dialect) -> str:
    # Each checkpoint adds itself on the day it was first seen and removes itself on the day it
    # was deleted; a running sum over a calendar turns those events into daily totals, so the cost
    # grows with checkpoints plus days, not checkpoints times days.
    return f"""
CREATE VIEW project_storage_daily AS
WITH RECURSIVE events AS (
    SELECT project_id, {d.utc_day("first_seen_at")} AS day, 1 AS checkpoints, size_bytes AS bytes
    FROM checkpoint_facts
    UNION ALL
    -- Deleted on the day it was first seen: never live.
    SELECT project_id, {d.latest(d.utc_day("first_seen_at"), d.utc_day("deleted_at"))}, -1, -size_bytes
    FROM checkpoint_facts
    WHERE deleted_at IS NOT NULL
),
daily AS (
    SELECT project_id, day, SUM(checkpoints) AS checkpoints, SUM(COALESCE(bytes, 0)) AS bytes
    FROM events
    GROUP BY project_id, day
),
project_start AS (
    SELECT project_id, MIN(day) AS first_day
    FROM (
        SELECT id AS project_id, {d.utc_day("first_seen_at")} AS day FROM training_projects
        UNION ALL
        SELECT project_id, day FROM daily
    ) starts
    GROUP BY project_id
),
calendar (day) AS (
    SELECT MIN(first_day) FROM project_start
    UNION ALL
    SELECT {d.next_day("day")} FROM calendar WHERE day < {d.today}
),
running AS (
    SELECT
        p.id AS project_id,
        p.name AS project_name,
        p.team_name AS team_name,
        c.day AS day,
        SUM(COALESCE(e.checkpoints, 0)) OVER (PARTITION BY p.id ORDER BY c.day) AS checkpoints,
        SUM(COALESCE(e.bytes, 0)) OVER (PARTITION BY p.id ORDER BY c.day) AS bytes
    FROM training_projects p
    JOIN project_start s ON s.project_id = p.id
    JOIN calendar c ON c.day >= s.first_day
    LEFT JOIN daily e ON e.project_id = p.id AND e.day = c.day
)
SELECT
    project_id,
    project_name,
    team_name,
    day,
    CAST(checkpoints AS BIGINT) AS live_checkpoint_count,
    CAST(bytes AS BIGINT) AS live_size_bytes,
    CAST(bytes AS DOUBLE PRECISION) / {GIB} AS live_size_gib
FROM running
"""  # noqa: S608 (constant fragments, no input)


def upgrade() -> None:
    dialect: Dialect = PostgreSQL if op.get_bind().dialect.name == "postgresql" else SQLite
    for create in (checkpoint_facts, job_facts, project_storage_daily):
        op.execute(create(dialect))


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
