-- The archive's schema on SQLite at revision 0029
-- Written by `python -m archiver.snapshot` from the revisions, as they leave an empty database:
-- do not edit; write it again after adding a revision (archiver/snapshot.py says why it is here).
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('0029');
CREATE TABLE api_response_bodies (
	id INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	size_bytes BIGINT NOT NULL, 
	encoding TEXT NOT NULL, 
	content_type TEXT, 
	body BLOB NOT NULL, withheld TEXT, 
	CONSTRAINT pk_api_response_bodies PRIMARY KEY (id), 
	CONSTRAINT uq_api_response_bodies_sha256 UNIQUE (sha256)
);
CREATE TABLE api_responses (
	id INTEGER NOT NULL, 
	sync_run_id BIGINT NOT NULL, 
	method TEXT NOT NULL, 
	path TEXT NOT NULL, 
	request_body TEXT, 
	status INTEGER NOT NULL, 
	body_id BIGINT NOT NULL, headers TEXT, 
	CONSTRAINT pk_api_responses PRIMARY KEY (id), 
	CONSTRAINT fk_api_responses_sync_run_id_sync_runs FOREIGN KEY(sync_run_id) REFERENCES sync_runs (id), 
	CONSTRAINT fk_api_responses_body_id_api_response_bodies FOREIGN KEY(body_id) REFERENCES api_response_bodies (id)
);
CREATE TABLE checkpoint_facts (project_id TEXT, project_name TEXT, project_label TEXT, team_name TEXT, job_id TEXT, job_name TEXT, checkpoint_id TEXT, checkpoint_type TEXT, created_at DATETIME, size_bytes BIGINT, size_gib DOUBLE, sync_status TEXT, is_uploaded BOOLEAN, base_model TEXT, lora_r BIGINT, lora_alpha DOUBLE, lora_dropout DOUBLE, lora_target_modules JSON, lora_target_modules_text TEXT, job_status TEXT, job_creator_email TEXT, job_created_at DATETIME, instance_type_name TEXT, gpu_type TEXT, gpu_count INTEGER, first_seen_at DATETIME, last_seen_at DATETIME, deleted_at DATETIME, project_deleted_at DATETIME);
CREATE TABLE checkpoint_history (
	id INTEGER NOT NULL, 
	training_job_id TEXT NOT NULL, 
	checkpoint_id TEXT NOT NULL, 
	created_at DATETIME, 
	checkpoint_type TEXT, 
	base_model TEXT, 
	lora_adapter_config_id BIGINT, 
	size_bytes BIGINT, 
	sync_status TEXT, 
	extra JSON, 
	deleted_at DATETIME, 
	valid_from DATETIME NOT NULL, 
	valid_to DATETIME NOT NULL, target TEXT, training_job_id_inferred BOOLEAN, 
	CONSTRAINT pk_checkpoint_history PRIMARY KEY (id, valid_from), 
	CONSTRAINT fk_checkpoint_history_id FOREIGN KEY(id) REFERENCES checkpoints (id), 
	CONSTRAINT fk_checkpoint_history_training_job_id FOREIGN KEY(training_job_id) REFERENCES training_jobs (id), 
	CONSTRAINT fk_checkpoint_history_lora_adapter_config_id FOREIGN KEY(lora_adapter_config_id) REFERENCES lora_adapter_configs (id)
);
CREATE TABLE checkpoint_lora_modules (project_id TEXT, job_id TEXT, checkpoint_id TEXT, module TEXT, deleted_at DATETIME);
CREATE TABLE "checkpoints" (
	id INTEGER NOT NULL, 
	training_job_id TEXT NOT NULL, 
	checkpoint_id TEXT NOT NULL, 
	created_at DATETIME, 
	checkpoint_type TEXT, 
	base_model TEXT, 
	lora_adapter_config_id BIGINT, 
	size_bytes BIGINT, 
	sync_status TEXT, 
	extra JSON, 
	first_seen_at DATETIME NOT NULL, 
	last_seen_at DATETIME NOT NULL, 
	deleted_at DATETIME, 
	valid_from DATETIME NOT NULL, target TEXT, training_job_id_inferred BOOLEAN, 
	CONSTRAINT pk_checkpoints PRIMARY KEY (id), 
	CONSTRAINT uq_checkpoints_training_job_id_checkpoint_id UNIQUE (training_job_id, checkpoint_id), 
	CONSTRAINT fk_checkpoints_training_job_id_training_jobs FOREIGN KEY(training_job_id) REFERENCES training_jobs (id), 
	CONSTRAINT fk_checkpoints_lora_adapter_config_id_lora_adapter_configs FOREIGN KEY(lora_adapter_config_id) REFERENCES lora_adapter_configs (id)
);
CREATE TABLE facts_inputs (
	name TEXT NOT NULL, 
	inputs TEXT NOT NULL, 
	refreshed_at DATETIME NOT NULL, 
	CONSTRAINT pk_facts_inputs PRIMARY KEY (name)
);
CREATE TABLE gpu_hours_daily (day DATE, project_id TEXT, project_name TEXT, project_label TEXT, team_name TEXT, job_id TEXT, job_name TEXT, job_status TEXT, instance_type_id TEXT, instance_type_name TEXT, gpu_type TEXT, gpu_count INTEGER, node_count INTEGER, total_gpu_count BIGINT, hours DOUBLE, gpu_hours DOUBLE);
CREATE TABLE instance_type_history (
	id TEXT NOT NULL, 
	name TEXT, 
	memory_limit_mib BIGINT, 
	millicpu_limit BIGINT, 
	gpu_count INTEGER, 
	gpu_type TEXT, 
	gpu_memory_limit_mib BIGINT, 
	extra JSON, 
	valid_from DATETIME NOT NULL, 
	valid_to DATETIME NOT NULL, nodes INTEGER, 
	CONSTRAINT pk_instance_type_history PRIMARY KEY (id, valid_from), 
	CONSTRAINT fk_instance_type_history_id FOREIGN KEY(id) REFERENCES instance_types (id)
);
CREATE TABLE "instance_types" (
	id TEXT NOT NULL, 
	name TEXT, 
	memory_limit_mib BIGINT, 
	millicpu_limit BIGINT, 
	gpu_count INTEGER, 
	gpu_type TEXT, 
	gpu_memory_limit_mib BIGINT, 
	extra JSON, 
	first_seen_at DATETIME NOT NULL, 
	last_seen_at DATETIME NOT NULL, 
	valid_from DATETIME NOT NULL, nodes INTEGER, 
	CONSTRAINT pk_instance_types PRIMARY KEY (id)
);
CREATE TABLE job_facts (job_id TEXT, job_name TEXT, project_id TEXT, project_name TEXT, project_label TEXT, team_name TEXT, job_status TEXT, job_status_since DATETIME, hours_in_status DOUBLE, error_message TEXT, checkpoint_sync_status TEXT, creator_email TEXT, instance_type_name TEXT, gpu_type TEXT, gpu_count INTEGER, node_count INTEGER, node_count_source TEXT, total_gpu_count BIGINT, created_at DATETIME, updated_at DATETIME, hours_since_update DOUBLE, checkpoint_count BIGINT, live_checkpoint_count BIGINT, checkpoints_size_bytes NUMERIC, checkpoints_size_gib DOUBLE, live_size_bytes NUMERIC, live_size_gib DOUBLE, latest_checkpoint_id TEXT, latest_checkpoint_size_bytes BIGINT, latest_checkpoint_size_gib DOUBLE, first_checkpoint_at DATETIME, last_checkpoint_at DATETIME, hours_to_first_checkpoint DOUBLE, wall_clock_hours DOUBLE, gpu_hours_estimate DOUBLE, first_seen_at DATETIME, last_seen_at DATETIME, deleted_at DATETIME, project_deleted_at DATETIME);
CREATE TABLE lora_adapter_configs (
	id INTEGER NOT NULL, 
	config_sha256 VARCHAR(64) NOT NULL, 
	r BIGINT, 
	lora_alpha FLOAT, 
	lora_dropout FLOAT, 
	target_modules JSON, 
	task_type TEXT, 
	peft_type TEXT, 
	base_model_name_or_path TEXT, 
	config JSON NOT NULL, 
	first_seen_at DATETIME NOT NULL, 
	last_seen_at DATETIME NOT NULL, 
	CONSTRAINT pk_lora_adapter_configs PRIMARY KEY (id), 
	CONSTRAINT uq_lora_adapter_configs_config_sha256 UNIQUE (config_sha256)
);
CREATE TABLE project_storage_daily (project_id TEXT, project_name TEXT, project_label TEXT, team_name TEXT, day DATE, live_checkpoint_count BIGINT, live_size_bytes NUMERIC, live_size_gib DOUBLE);
CREATE TABLE rejected_entries (
	id INTEGER NOT NULL, 
	sync_run_id BIGINT NOT NULL, 
	endpoint TEXT NOT NULL, 
	project_id TEXT, 
	job_id TEXT, 
	entry_id TEXT, 
	field TEXT, 
	reason TEXT NOT NULL, 
	entry TEXT NOT NULL, 
	rejected_at DATETIME NOT NULL, 
	CONSTRAINT pk_rejected_entries PRIMARY KEY (id), 
	CONSTRAINT fk_rejected_entries_sync_run_id_sync_runs FOREIGN KEY(sync_run_id) REFERENCES sync_runs (id)
);
CREATE TABLE sync_errors (
	id INTEGER NOT NULL, 
	sync_run_id BIGINT NOT NULL, 
	project_id TEXT, 
	job_id TEXT, 
	kind TEXT NOT NULL, 
	message TEXT NOT NULL, 
	occurred_at DATETIME NOT NULL, 
	CONSTRAINT pk_sync_errors PRIMARY KEY (id), 
	CONSTRAINT fk_sync_errors_sync_run_id_sync_runs FOREIGN KEY(sync_run_id) REFERENCES sync_runs (id)
);
CREATE TABLE sync_runs (
	id INTEGER NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	status TEXT NOT NULL, 
	scope JSON, 
	full_sync BOOLEAN NOT NULL, 
	projects INTEGER DEFAULT '0' NOT NULL, 
	jobs INTEGER DEFAULT '0' NOT NULL, 
	jobs_fetched INTEGER DEFAULT '0' NOT NULL, 
	jobs_skipped INTEGER DEFAULT '0' NOT NULL, 
	jobs_failed INTEGER DEFAULT '0' NOT NULL, 
	checkpoints_inserted INTEGER DEFAULT '0' NOT NULL, 
	checkpoints_updated INTEGER DEFAULT '0' NOT NULL, 
	checkpoints_unchanged INTEGER DEFAULT '0' NOT NULL, 
	checkpoints_deleted INTEGER DEFAULT '0' NOT NULL, 
	requests INTEGER DEFAULT '0' NOT NULL, 
	error_summary TEXT, 
	archiver_version TEXT NOT NULL, 
	hostname TEXT, 
	pid INTEGER, options JSON, 
	CONSTRAINT pk_sync_runs PRIMARY KEY (id)
);
CREATE TABLE training_job_history (
	id TEXT NOT NULL, 
	training_project_id TEXT NOT NULL, 
	instance_type_id TEXT, 
	name TEXT, 
	current_status TEXT, 
	error_message TEXT, 
	checkpoint_sync_status TEXT, 
	priority BIGINT, 
	user_email TEXT, 
	availability_model TEXT, 
	created_at DATETIME, 
	updated_at DATETIME, 
	extra JSON, 
	deleted_at DATETIME, 
	valid_from DATETIME NOT NULL, 
	valid_to DATETIME NOT NULL, node_count INTEGER, 
	CONSTRAINT pk_training_job_history PRIMARY KEY (id, valid_from), 
	CONSTRAINT fk_training_job_history_id FOREIGN KEY(id) REFERENCES training_jobs (id), 
	CONSTRAINT fk_training_job_history_training_project_id FOREIGN KEY(training_project_id) REFERENCES training_projects (id), 
	CONSTRAINT fk_training_job_history_instance_type_id FOREIGN KEY(instance_type_id) REFERENCES instance_types (id)
);
CREATE TABLE "training_jobs" (
	id TEXT NOT NULL, 
	training_project_id TEXT NOT NULL, 
	instance_type_id TEXT, 
	name TEXT, 
	current_status TEXT, 
	error_message TEXT, 
	checkpoint_sync_status TEXT, 
	priority BIGINT, 
	user_email TEXT, 
	availability_model TEXT, 
	created_at DATETIME, 
	updated_at DATETIME, 
	extra JSON, 
	first_seen_at DATETIME NOT NULL, 
	last_seen_at DATETIME NOT NULL, 
	deleted_at DATETIME, 
	checkpoints_fetched_at DATETIME, 
	checkpoints_fetched_job_updated_at DATETIME, 
	checkpoints_all_complete BOOLEAN, 
	valid_from DATETIME NOT NULL, checkpoints_fetched_job_status TEXT, node_count INTEGER, 
	CONSTRAINT pk_training_jobs PRIMARY KEY (id), 
	CONSTRAINT fk_training_jobs_training_project_id_training_projects FOREIGN KEY(training_project_id) REFERENCES training_projects (id), 
	CONSTRAINT fk_training_jobs_instance_type_id_instance_types FOREIGN KEY(instance_type_id) REFERENCES instance_types (id)
);
CREATE TABLE training_project_history (
	id TEXT NOT NULL, 
	name TEXT, 
	team_name TEXT, 
	created_at DATETIME, 
	updated_at DATETIME, 
	extra JSON, 
	deleted_at DATETIME, 
	valid_from DATETIME NOT NULL, 
	valid_to DATETIME NOT NULL, latest_job_id TEXT, 
	CONSTRAINT pk_training_project_history PRIMARY KEY (id, valid_from), 
	CONSTRAINT fk_training_project_history_id FOREIGN KEY(id) REFERENCES training_projects (id)
);
CREATE TABLE "training_projects" (
	id TEXT NOT NULL, 
	name TEXT, 
	team_name TEXT, 
	created_at DATETIME, 
	updated_at DATETIME, 
	extra JSON, 
	first_seen_at DATETIME NOT NULL, 
	last_seen_at DATETIME NOT NULL, 
	deleted_at DATETIME, 
	valid_from DATETIME NOT NULL, latest_job_id TEXT, 
	CONSTRAINT pk_training_projects PRIMARY KEY (id)
);
CREATE INDEX ix_sync_runs_started_at ON sync_runs (started_at);
CREATE INDEX ix_sync_errors_sync_run_id ON sync_errors (sync_run_id);
CREATE INDEX ix_training_jobs_training_project_id ON training_jobs (training_project_id);
CREATE INDEX ix_checkpoints_lora_adapter_config_id ON checkpoints (lora_adapter_config_id);
CREATE INDEX ix_api_responses_sync_run_id ON api_responses (sync_run_id);
CREATE INDEX ix_rejected_entries_sync_run_id ON rejected_entries (sync_run_id);
CREATE VIEW training_project_versions AS SELECT id, name, team_name, created_at, updated_at, extra, deleted_at, valid_from, valid_to, latest_job_id FROM training_project_history UNION ALL SELECT id, name, team_name, created_at, updated_at, extra, deleted_at, valid_from, NULL AS valid_to, latest_job_id FROM training_projects;
CREATE VIEW instance_type_versions AS SELECT id, name, memory_limit_mib, millicpu_limit, gpu_count, gpu_type, gpu_memory_limit_mib, extra, valid_from, valid_to, nodes FROM instance_type_history UNION ALL SELECT id, name, memory_limit_mib, millicpu_limit, gpu_count, gpu_type, gpu_memory_limit_mib, extra, valid_from, NULL AS valid_to, nodes FROM instance_types;
CREATE VIEW training_job_versions AS SELECT id, training_project_id, instance_type_id, name, current_status, error_message, checkpoint_sync_status, priority, user_email, availability_model, created_at, updated_at, extra, deleted_at, valid_from, valid_to, node_count FROM training_job_history UNION ALL SELECT id, training_project_id, instance_type_id, name, current_status, error_message, checkpoint_sync_status, priority, user_email, availability_model, created_at, updated_at, extra, deleted_at, valid_from, NULL AS valid_to, node_count FROM training_jobs;
CREATE VIEW checkpoint_versions AS SELECT id, training_job_id, checkpoint_id, created_at, checkpoint_type, base_model, lora_adapter_config_id, size_bytes, sync_status, extra, deleted_at, valid_from, valid_to, target, training_job_id_inferred FROM checkpoint_history UNION ALL SELECT id, training_job_id, checkpoint_id, created_at, checkpoint_type, base_model, lora_adapter_config_id, size_bytes, sync_status, extra, deleted_at, valid_from, NULL AS valid_to, target, training_job_id_inferred FROM checkpoints;
CREATE INDEX ix_checkpoint_facts_job_id ON checkpoint_facts (job_id);
CREATE INDEX ix_checkpoint_facts_project_id ON checkpoint_facts (project_id);
CREATE INDEX ix_checkpoint_facts_created_at ON checkpoint_facts (created_at);
CREATE INDEX ix_checkpoint_facts_checkpoint_type ON checkpoint_facts (checkpoint_type);
CREATE INDEX ix_job_facts_project_id ON job_facts (project_id);
CREATE INDEX ix_job_facts_job_status ON job_facts (job_status);
CREATE INDEX ix_project_storage_daily_day ON project_storage_daily (day);
CREATE INDEX ix_project_storage_daily_project_id ON project_storage_daily (project_id);
CREATE INDEX ix_gpu_hours_daily_day ON gpu_hours_daily (day);
CREATE INDEX ix_gpu_hours_daily_job_id ON gpu_hours_daily (job_id);
CREATE INDEX ix_gpu_hours_daily_instance_type_name ON gpu_hours_daily (instance_type_name);
CREATE VIEW checkpoint_lora_modules_live AS
SELECT
    j.training_project_id AS project_id,
    c.training_job_id AS job_id,
    c.checkpoint_id AS checkpoint_id,
    CAST(m.value AS TEXT) AS module,
    c.deleted_at AS deleted_at
FROM checkpoints c
JOIN training_jobs j ON j.id = c.training_job_id
JOIN lora_adapter_configs l ON l.id = c.lora_adapter_config_id
JOIN json_each(CASE json_type(l.target_modules) WHEN 'array' THEN l.target_modules WHEN 'text' THEN json_array(json_extract(l.target_modules, '$')) END) m;
CREATE INDEX ix_checkpoint_lora_modules_module ON checkpoint_lora_modules (module);
CREATE VIEW training_job_status_history AS SELECT v.id AS training_job_id, v.current_status AS status, v.valid_from AS observed_at, r.id AS sync_run_id FROM (    SELECT id, current_status, valid_from,           LAG(current_status) OVER (PARTITION BY id ORDER BY valid_from) AS previous,           ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from) AS position    FROM training_job_versions) v LEFT JOIN sync_runs r ON r.started_at = v.valid_from AND NOT EXISTS (SELECT 1 FROM sync_runs earlier WHERE earlier.started_at = r.started_at AND earlier.id < r.id) WHERE v.position = 1 OR v.previous IS NOT v.current_status;
CREATE INDEX ix_training_projects_name ON training_projects (name);
CREATE VIEW checkpoint_facts_live AS
SELECT
    p.id AS project_id,
    p.name AS project_name,
    p.label AS project_label,
    p.team_name AS team_name,
    j.id AS job_id,
    j.name AS job_name,
    c.checkpoint_id AS checkpoint_id,
    c.checkpoint_type AS checkpoint_type,
    c.created_at AS created_at,
    c.size_bytes AS size_bytes,
    CAST(c.size_bytes AS DOUBLE PRECISION) / 1073741824 AS size_gib,
    c.sync_status AS sync_status,
    CASE WHEN c.sync_status IS NULL OR TRIM(c.sync_status) = '' THEN NULL WHEN UPPER(TRIM(c.sync_status)) IN ('COMPLETE', 'COMPLETED') THEN TRUE ELSE FALSE END AS is_uploaded,
    c.base_model AS base_model,
    l.r AS lora_r,
    l.lora_alpha AS lora_alpha,
    l.lora_dropout AS lora_dropout,
    l.modules AS lora_target_modules,
    l.modules_text AS lora_target_modules_text,
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
        THEN COALESCE(max(c.last_seen_at, j.checkpoints_fetched_at), c.last_seen_at)
        ELSE c.last_seen_at
    END AS last_seen_at,
    NULLIF(min(COALESCE(c.deleted_at, '~'), COALESCE(j.deleted_at, '~'), COALESCE(p.deleted_at, '~')), '~') AS deleted_at,
    p.deleted_at AS project_deleted_at
FROM checkpoints c
JOIN training_jobs j ON j.id = c.training_job_id
JOIN (
    SELECT p.id, p.name, p.team_name, p.deleted_at, CASE WHEN p.name IS NULL OR p.name = '' THEN p.id WHEN EXISTS (SELECT 1 FROM training_projects o WHERE o.name = p.name AND o.id <> p.id) THEN p.name || ' (' || p.id || ')' ELSE p.name END AS label FROM training_projects p LIMIT -1
) p ON p.id = j.training_project_id
LEFT JOIN instance_types it ON it.id = j.instance_type_id
LEFT JOIN (
    SELECT
        l.id, l.r, l.lora_alpha, l.lora_dropout,
        CASE json_type(l.target_modules) WHEN 'array' THEN l.target_modules WHEN 'text' THEN json_array(json_extract(l.target_modules, '$')) END AS modules,
        CASE json_type(l.target_modules) WHEN 'text' THEN json_extract(l.target_modules, '$') WHEN 'array' THEN COALESCE((SELECT group_concat(name, ',') FROM (SELECT DISTINCT value AS name FROM json_each(l.target_modules) ORDER BY name)), '') END AS modules_text
    FROM lora_adapter_configs l LIMIT -1
) l ON l.id = c.lora_adapter_config_id;
CREATE VIEW project_storage_daily_live AS
WITH RECURSIVE team_periods AS (
    -- Each version of a project, with the ends of the days it names the team of: those after it
    -- began (any, for the first version), up to when the next one began.
    SELECT
        id,
        team_name,
        CASE WHEN ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from) = 1 THEN NULL ELSE valid_from END AS since,
        LEAD(valid_from) OVER (PARTITION BY id ORDER BY valid_from) AS until
    FROM training_project_versions
),
spans AS (
    -- The versions in which a checkpoint existed: the first from its created_at, each until a
    -- sync saw it end, or its job or project was noticed gone (as checkpoint_facts counts it).
    SELECT
        j.training_project_id AS project_id,
        v.size_bytes AS size_bytes,
        CASE WHEN NOT EXISTS (
            SELECT 1 FROM checkpoint_history h WHERE h.id = v.id AND h.valid_from < v.valid_from
        )
            THEN NULLIF(min(COALESCE(v.created_at, '~'), COALESCE(v.valid_from, '~')), '~')
            ELSE v.valid_from
        END AS live_from,
        NULLIF(min(COALESCE(v.valid_to, '~'), COALESCE(j.deleted_at, '~'), COALESCE(p.deleted_at, '~')), '~') AS live_to
    FROM checkpoint_versions v
    JOIN training_jobs j ON j.id = v.training_job_id
    JOIN training_projects p ON p.id = j.training_project_id
    WHERE v.deleted_at IS NULL
),
events AS (
    SELECT project_id, date(live_from) AS day, 1 AS checkpoints, ((size_bytes) >> 32) AS bytes_high, ((size_bytes) & 4294967295) AS bytes_low
    FROM spans
    UNION ALL
    -- Ended on the day it began: never live at the end of a day.
    SELECT project_id, max(date(live_from), date(live_to)), -1, -((size_bytes) >> 32), -((size_bytes) & 4294967295)
    FROM spans
    WHERE live_to IS NOT NULL
),
daily AS (
    SELECT project_id, max(day, date(date('now'), '-3652 days')) AS day, SUM(checkpoints) AS checkpoints, SUM(COALESCE(bytes_high, 0)) AS bytes_high, SUM(COALESCE(bytes_low, 0)) AS bytes_low
    FROM events
    GROUP BY project_id, max(day, date(date('now'), '-3652 days'))
),
project_start AS (
    SELECT project_id, MIN(day) AS first_day
    FROM (
        SELECT id AS project_id, date(NULLIF(min(COALESCE(created_at, '~'), COALESCE(first_seen_at, '~')), '~')) AS day FROM training_projects
        UNION ALL
        SELECT project_id, day FROM daily
    ) starts
    GROUP BY project_id
),
calendar (day) AS (
    SELECT max(MIN(first_day), date(date('now'), '-3652 days')) FROM project_start
    UNION ALL
    SELECT date(day, '+1 day') FROM calendar WHERE day < date('now')
),
running AS (
    SELECT
        p.id AS project_id,
        p.name AS project_name,
    CASE WHEN p.name IS NULL OR p.name = '' THEN p.id WHEN EXISTS (SELECT 1 FROM training_projects o WHERE o.name = p.name AND o.id <> p.id) THEN p.name || ' (' || p.id || ')' ELSE p.name END AS project_label,
        p.team_name AS team_name,
        c.day AS day,
        SUM(COALESCE(e.checkpoints, 0)) OVER (PARTITION BY p.id ORDER BY c.day) AS checkpoints,
        SUM(COALESCE(e.bytes_high, 0)) OVER (PARTITION BY p.id ORDER BY c.day) AS bytes_high,
        SUM(COALESCE(e.bytes_low, 0)) OVER (PARTITION BY p.id ORDER BY c.day) AS bytes_low
    FROM training_projects p
    JOIN project_start s ON s.project_id = p.id
    JOIN calendar c ON c.day >= s.first_day
    LEFT JOIN daily e ON e.project_id = p.id AND e.day = c.day
)
SELECT
    project_id,
    project_name,
    project_label,
    t.team_name AS team_name,
    day,
    CAST(checkpoints AS BIGINT) AS live_checkpoint_count,
    (bytes_high * 4294967296 + bytes_low) AS live_size_bytes,
    CAST((bytes_high * 4294967296 + bytes_low) AS DOUBLE PRECISION) / 1073741824 AS live_size_gib
FROM running
LEFT JOIN team_periods t ON t.id = running.project_id
    AND (t.since IS NULL OR t.since < (date(running.day, '+1 day') || ' 00:00:00.000000')) AND (t.until IS NULL OR (date(running.day, '+1 day') || ' 00:00:00.000000') <= t.until);
CREATE VIEW gpu_hours_daily_live AS
WITH RECURSIVE runs AS (
    SELECT
        j.id AS job_id,
        max(j.created_at, (date(date('now'), '-3652 days') || ' 00:00:00.000000')) AS run_from,
        CASE WHEN j.current_status IN ('TRAINING_JOB_COMPLETED', 'TRAINING_JOB_FAILED', 'TRAINING_JOB_STOPPED', 'TRAINING_JOB_DEPLOY_FAILED')
            THEN COALESCE(j.updated_at, j.last_seen_at)
            ELSE j.last_seen_at
        END AS run_to,
        COALESCE(j.node_count, it.nodes, 1) AS node_count
    FROM training_jobs j
    LEFT JOIN instance_types it ON it.id = j.instance_type_id
    WHERE j.created_at IS NOT NULL
),
spans AS (
    SELECT job_id, run_from, NULLIF(min(COALESCE(run_to, '~'), COALESCE((date(date('now'), '+1 day') || ' 00:00:00.000000'), '~')), '~') AS run_to, node_count FROM runs WHERE NULLIF(min(COALESCE(run_to, '~'), COALESCE((date(date('now'), '+1 day') || ' 00:00:00.000000'), '~')), '~') > run_from
),
days AS (
    SELECT job_id, date(run_from) AS day, run_to FROM spans
    UNION ALL
    SELECT s.job_id, date(s.day, '+1 day'), s.run_to
    FROM days s
    WHERE (date(s.day, '+1 day') || ' 00:00:00.000000') < s.run_to
)
SELECT
    s.day AS day,
    p.id AS project_id,
    p.name AS project_name,
    CASE WHEN p.name IS NULL OR p.name = '' THEN p.id WHEN EXISTS (SELECT 1 FROM training_projects o WHERE o.name = p.name AND o.id <> p.id) THEN p.name || ' (' || p.id || ')' ELSE p.name END AS project_label,
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
    CAST((CAST(strftime('%s', NULLIF(min(COALESCE(r.run_to, '~'), COALESCE((date(s.day, '+1 day') || ' 00:00:00.000000'), '~')), '~')) AS INTEGER) * 1000000 + CAST(substr(NULLIF(min(COALESCE(r.run_to, '~'), COALESCE((date(s.day, '+1 day') || ' 00:00:00.000000'), '~')), '~'), 21, 6) AS INTEGER)) - (CAST(strftime('%s', max(r.run_from, (s.day || ' 00:00:00.000000'))) AS INTEGER) * 1000000 + CAST(substr(max(r.run_from, (s.day || ' 00:00:00.000000')), 21, 6) AS INTEGER)) AS REAL) / 3600000000.0 AS hours,
    -- Hours first: PostgreSQL would multiply the two counts as 32-bit integers, which can overflow.
    CAST((CAST(strftime('%s', NULLIF(min(COALESCE(r.run_to, '~'), COALESCE((date(s.day, '+1 day') || ' 00:00:00.000000'), '~')), '~')) AS INTEGER) * 1000000 + CAST(substr(NULLIF(min(COALESCE(r.run_to, '~'), COALESCE((date(s.day, '+1 day') || ' 00:00:00.000000'), '~')), '~'), 21, 6) AS INTEGER)) - (CAST(strftime('%s', max(r.run_from, (s.day || ' 00:00:00.000000'))) AS INTEGER) * 1000000 + CAST(substr(max(r.run_from, (s.day || ' 00:00:00.000000')), 21, 6) AS INTEGER)) AS REAL) / 3600000000.0 * it.gpu_count * r.node_count AS gpu_hours
FROM days s
JOIN spans r ON r.job_id = s.job_id
JOIN training_jobs j ON j.id = s.job_id
JOIN training_projects p ON p.id = j.training_project_id
LEFT JOIN instance_types it ON it.id = j.instance_type_id;
CREATE INDEX ix_checkpoints_deleted_at ON checkpoints (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE VIEW job_facts_live AS
WITH job_versions AS (
    SELECT
        id,
        current_status,
        updated_at,
        valid_from,
        LAG(current_status) OVER (PARTITION BY id ORDER BY valid_from) AS previous_status,
        LAG(valid_from) OVER (PARTITION BY id ORDER BY valid_from) AS previous_from,
        ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from) AS position
    FROM training_job_versions
),
status_start AS (
    -- The version in which the job took on its current status: the last one whose status
    -- differs from the version before it (or its first).
    SELECT
        id,
        updated_at,
        valid_from,
        previous_from,
        ROW_NUMBER() OVER (PARTITION BY id ORDER BY valid_from DESC) AS recency
    FROM job_versions
    WHERE position = 1 OR previous_status IS NOT current_status
),
status_since AS (
    -- A finished job says when it finished: its updated_at in that version, no earlier than the
    -- version before began and no later than the sync that saw it. Otherwise: that sync.
    SELECT
        s.id AS job_id,
        CASE WHEN j.current_status IN ('TRAINING_JOB_COMPLETED', 'TRAINING_JOB_FAILED', 'TRAINING_JOB_STOPPED', 'TRAINING_JOB_DEPLOY_FAILED') AND s.updated_at IS NOT NULL
            THEN NULLIF(min(COALESCE(s.valid_from, '~'), COALESCE(NULLIF(max(COALESCE(s.updated_at, ''), COALESCE(s.previous_from, '')), ''), '~')), '~')
            ELSE s.valid_from
        END AS since
    FROM status_start s
    JOIN training_jobs j ON j.id = s.id
    WHERE s.recency = 1
),
jobs AS (
    SELECT
        j.id, j.training_project_id, j.instance_type_id, j.name, j.current_status, j.error_message, j.checkpoint_sync_status, j.user_email, j.created_at, j.updated_at, j.extra, j.first_seen_at, j.last_seen_at, j.deleted_at,
        COALESCE(j.node_count, (SELECT t.nodes FROM instance_types t WHERE t.id = j.instance_type_id), 1) AS node_count,
        CASE WHEN j.node_count IS NOT NULL THEN 'node_count' WHEN (SELECT t.nodes FROM instance_types t WHERE t.id = j.instance_type_id) IS NOT NULL THEN 'instance_type' ELSE 'default' END AS node_count_source,
        CASE WHEN j.current_status IN ('TRAINING_JOB_COMPLETED', 'TRAINING_JOB_FAILED', 'TRAINING_JOB_STOPPED', 'TRAINING_JOB_DEPLOY_FAILED')
             THEN CAST((CAST(strftime('%s', j.updated_at) AS INTEGER) * 1000000 + CAST(substr(j.updated_at, 21, 6) AS INTEGER)) - (CAST(strftime('%s', j.created_at) AS INTEGER) * 1000000 + CAST(substr(j.created_at, 21, 6) AS INTEGER)) AS REAL) / 3600000000.0 END AS wall_clock_hours
    FROM training_jobs j
)
SELECT
    j.id AS job_id,
    j.name AS job_name,
    p.id AS project_id,
    p.name AS project_name,
    CASE WHEN p.name IS NULL OR p.name = '' THEN p.id WHEN EXISTS (SELECT 1 FROM training_projects o WHERE o.name = p.name AND o.id <> p.id) THEN p.name || ' (' || p.id || ')' ELSE p.name END AS project_label,
    p.team_name AS team_name,
    j.current_status AS job_status,
    s.since AS job_status_since,
    CAST((CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr('now', 21, 6) AS INTEGER)) - (CAST(strftime('%s', s.since) AS INTEGER) * 1000000 + CAST(substr(s.since, 21, 6) AS INTEGER)) AS REAL) / 3600000000.0 AS hours_in_status,
    j.error_message AS error_message,
    j.checkpoint_sync_status AS checkpoint_sync_status,
    j.user_email AS creator_email,
    it.name AS instance_type_name,
    it.gpu_type AS gpu_type,
    it.gpu_count AS gpu_count,
    j.node_count AS node_count,
    j.node_count_source AS node_count_source,
    -- A BIGINT product: two 32-bit counts can overflow INTEGER on PostgreSQL.
    CAST(it.gpu_count AS BIGINT) * j.node_count AS total_gpu_count,
    j.created_at AS created_at,
    j.updated_at AS updated_at,
    CAST((CAST(strftime('%s', 'now') AS INTEGER) * 1000000 + CAST(substr('now', 21, 6) AS INTEGER)) - (CAST(strftime('%s', j.updated_at) AS INTEGER) * 1000000 + CAST(substr(j.updated_at, 21, 6) AS INTEGER)) AS REAL) / 3600000000.0 AS hours_since_update,
    COALESCE(json_extract(t.value, '$.checkpoint_count'), 0) AS checkpoint_count,
    COALESCE(json_extract(t.value, '$.live_checkpoint_count'), 0) AS live_checkpoint_count,
    COALESCE((json_extract(t.value, '$.size_high') * 4294967296 + json_extract(t.value, '$.size_low')), 0) AS checkpoints_size_bytes,
    CAST(COALESCE((json_extract(t.value, '$.size_high') * 4294967296 + json_extract(t.value, '$.size_low')), 0) AS DOUBLE PRECISION) / 1073741824 AS checkpoints_size_gib,
    COALESCE((json_extract(t.value, '$.live_high') * 4294967296 + json_extract(t.value, '$.live_low')), 0) AS live_size_bytes,
    CAST(COALESCE((json_extract(t.value, '$.live_high') * 4294967296 + json_extract(t.value, '$.live_low')), 0) AS DOUBLE PRECISION) / 1073741824 AS live_size_gib,
    lc.checkpoint_id AS latest_checkpoint_id,
    lc.size_bytes AS latest_checkpoint_size_bytes,
    CAST(lc.size_bytes AS DOUBLE PRECISION) / 1073741824 AS latest_checkpoint_size_gib,
    json_extract(t.value, '$.first_checkpoint_at') AS first_checkpoint_at,
    json_extract(t.value, '$.last_checkpoint_at') AS last_checkpoint_at,
    CAST((CAST(strftime('%s', json_extract(t.value, '$.first_checkpoint_at')) AS INTEGER) * 1000000 + CAST(substr(json_extract(t.value, '$.first_checkpoint_at'), 21, 6) AS INTEGER)) - (CAST(strftime('%s', j.created_at) AS INTEGER) * 1000000 + CAST(substr(j.created_at, 21, 6) AS INTEGER)) AS REAL) / 3600000000.0 AS hours_to_first_checkpoint,
    j.wall_clock_hours AS wall_clock_hours,
    -- Hours first: PostgreSQL would multiply the two counts as 32-bit integers, which can overflow.
    j.wall_clock_hours * it.gpu_count * j.node_count AS gpu_hours_estimate,
    j.first_seen_at AS first_seen_at,
    j.last_seen_at AS last_seen_at,
    NULLIF(min(COALESCE(j.deleted_at, '~'), COALESCE(p.deleted_at, '~')), '~') AS deleted_at,
    p.deleted_at AS project_deleted_at
FROM jobs j
JOIN training_projects p ON p.id = j.training_project_id
LEFT JOIN instance_types it ON it.id = j.instance_type_id
LEFT JOIN status_since s ON s.job_id = j.id
-- Each job's totals over its rows of checkpoint_facts (through the index on job_id), for the jobs kept
-- only: one object a job, the one row of json_each, which SQLite evaluates once for each job.
LEFT JOIN json_each(json_array((
    SELECT json_object(
        'checkpoint_count', COUNT(*),
        'live_checkpoint_count', SUM(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END),
        'size_high', SUM(((size_bytes) >> 32)),
        'size_low', SUM(((size_bytes) & 4294967295)),
        'live_high', SUM(((CASE WHEN deleted_at IS NULL THEN size_bytes ELSE 0 END) >> 32)),
        'live_low', SUM(((CASE WHEN deleted_at IS NULL THEN size_bytes ELSE 0 END) & 4294967295)),
        'first_checkpoint_at', MIN(created_at),
        'last_checkpoint_at', MAX(created_at)
    )
    FROM checkpoint_facts f
    WHERE f.job_id = j.id
))) t
-- Each job's first checkpoint in this order, looked up through the index on training_job_id for the
-- jobs kept only. Undated checkpoints last.
LEFT JOIN checkpoints lc ON lc.id = (
    SELECT l.id
    FROM checkpoints l
    WHERE l.training_job_id = j.id
    ORDER BY CASE WHEN l.created_at IS NULL THEN 1 ELSE 0 END, l.created_at DESC, l.id DESC
    LIMIT 1
);
CREATE INDEX ix_checkpoint_lora_modules_job_id_checkpoint_id ON checkpoint_lora_modules (job_id, checkpoint_id);
