"""What every table, view and column of the archive means, written once, here.

The tables (`archiver.schema`) and views (`archiver.views`) carry these as their comments, and
`archiver.docs` publishes them: as PostgreSQL comments at every migration, as the column tables of
docs/schema.md, as Datasette metadata. A new table, view or column needs its line in `ABOUT`
(tests/test_docs.py fails until it has one). History tables and `*_versions` views are described
from the table whose versions they keep (`_versions_of`), so they never need lines of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import sqlalchemy as sa


class Versioned(Protocol):
    """What describing a kept table's history needs of it (`archiver.schema.Versioned` has it)."""

    @property
    def table(self) -> sa.Table: ...
    @property
    def history(self) -> sa.Table: ...
    @property
    def versions(self) -> str: ...
    @property
    def values(self) -> tuple[str, ...]: ...
    @property
    def identity(self) -> tuple[str, ...]: ...


class About:
    """A table's or view's description and its columns', in column order."""

    def __init__(self, what: str, /, **columns: str) -> None:
        self.what = what
        self.columns = columns


# Said of several tables: written once.
EXTRA = "JSON: fields the API sent that have no column"
FIRST_SEEN = "the sync that first archived it"
LISTED = "the sync that last saw it listed"
GPU_TYPE = "GPU model, e.g. `H100`; null for CPU-only instances"
GPU_COUNT = "GPUs per node"
TEAM = "the project's team, or null"
PROJECT_LABEL = (
    "the project's name, with its id in parentheses where another project has the same name "
    "(`qwen3-8b-support-sft (9oylhza)`), its id where it has no name: one label per project, for charts"
)
SAME_IN_GIB = "the same in GiB"
INSTANCE_TYPE_NAME = "the job's instance type, e.g. `8xH100`"


def _valid_from(history: str) -> str:
    return (
        "since when the row's current version (its values, or its deletion) holds: the sync that first "
        f"saw it; the earlier versions are in `{history}`"
    )


ABOUT: dict[str, About] = {
    # Views for people and BI tools.
    "checkpoint_facts": About(
        "One row per checkpoint ever archived, joined to its job, project, instance type and LoRA config. "
        "A checkpoint counts as deleted from the moment it, its job or its project was noticed gone "
        "(deleting a project on Baseten deletes everything in it).",
        project_id="Baseten project id",
        project_name="project name (not unique: Baseten allows repeats; group by `project_id`)",
        project_label=PROJECT_LABEL,
        team_name=TEAM,
        job_id="Baseten training job id",
        job_name="job name, or null",
        checkpoint_id="the checkpoint's id within its job, e.g. `checkpoint-500`; "
        "(`job_id`, `checkpoint_id`) is unique",
        checkpoint_type="`lora`, `full`, `whisper`, or what the API sent",
        created_at="when Baseten created the checkpoint (UTC)",
        size_bytes="size in bytes",
        size_gib="size in GiB (bytes / 2^30)",
        sync_status="upload state: `SYNCING`, `COMPLETE`/`COMPLETED`, or null for old jobs",
        is_uploaded="true when `sync_status` says the upload is complete (`COMPLETE` or `COMPLETED`, any case), "
        "false for any other state (`SYNCING`), null where none was sent",
        base_model="the base model (for LoRA, the adapter's `base_model_name_or_path`)",
        lora_r="LoRA rank, or null for non-LoRA checkpoints",
        lora_alpha="LoRA alpha",
        lora_dropout="LoRA dropout",
        lora_target_modules="JSON array of the module names; a config that gave one regular expression as a string "
        "reads as an array holding it (`lora_adapter_configs.target_modules` keeps it as sent)",
        lora_target_modules_text="the same as text to group and filter by: the module names, each once, "
        "sorted by code point and joined with commas (`k_proj,q_proj,v_proj`; an empty list gives an empty "
        "string), or the regular expression as it is; null without a LoRA config",
        job_status="the job's current status, e.g. `TRAINING_JOB_COMPLETED`",
        job_creator_email="who started the job, or null",
        job_created_at="when the job was created (UTC)",
        instance_type_name=INSTANCE_TYPE_NAME,
        gpu_type=GPU_TYPE,
        gpu_count=GPU_COUNT,
        first_seen_at="the sync that first archived the checkpoint",
        last_seen_at="the sync that last saw it listed (for a live checkpoint, its job's last full read)",
        deleted_at="when the checkpoint, its job or its project was noticed gone, whichever was first; "
        "null while it exists",
        project_deleted_at="when its project was noticed gone; null while it exists",
    ),
    "job_facts": About(
        "One row per job ever archived, with its checkpoints summed up and its cost estimated.",
        job_id="Baseten training job id",
        job_name="job name, or null",
        project_id="Baseten project id",
        project_name="project name",
        project_label=PROJECT_LABEL,
        team_name=TEAM,
        job_status="current status, e.g. `TRAINING_JOB_RUNNING`",
        job_status_since="since when the job has had its current status. For a finished job (`COMPLETED`, "
        "`FAILED`, `STOPPED`, `DEPLOY_FAILED`), the API's own word: the job's `updated_at` in the version "
        "where the status first appeared (in `training_job_versions`), kept no earlier than the start of "
        "the version before it (which had another status) and no later than the sync that saw it; so a "
        "job that failed before the archive first saw it says when it failed. For any other status, or "
        "without an `updated_at`, the sync that first saw the status "
        "(`training_job_status_history.observed_at`): the change happened between the previous sync and "
        "that instant",
        hours_in_status="hours from `job_status_since` to now",
        error_message="the API's error message for failed jobs",
        checkpoint_sync_status="the job's checkpoint upload state, e.g. `SYNCING`, `COMPLETED`",
        creator_email="who started the job, or null",
        instance_type_name=INSTANCE_TYPE_NAME,
        gpu_type=GPU_TYPE,
        gpu_count=GPU_COUNT,
        node_count="nodes the job ran on: the API's `node_count` when it sends one (era D on), else the nodes "
        'its instance type names (`H200:2x8x128x1600`, "2 Nodes of 8 H200 GPUs"), else 1',
        node_count_source="where `node_count` came from: `node_count` (the API said), `instance_type` (its "
        "instance type names it) or `default` (neither: 1)",
        total_gpu_count="GPUs of the whole job: `gpu_count` (per node) x `node_count`",
        created_at="when the job was created (UTC)",
        updated_at="when Baseten last updated the job (UTC); for a finished job, about when it finished",
        hours_since_update="hours from `updated_at` to now",
        checkpoint_count="checkpoints ever archived for the job, deleted ones included",
        live_checkpoint_count="of those, the ones not deleted",
        checkpoints_size_bytes="total size of every archived checkpoint, in bytes (exact: `numeric` on "
        "PostgreSQL; on SQLite a float past 2^63 - 1)",
        checkpoints_size_gib=SAME_IN_GIB,
        live_size_bytes="total size of the live checkpoints, in bytes: what the job holds on Baseten now "
        "(exact, as `checkpoints_size_bytes`)",
        live_size_gib=SAME_IN_GIB,
        latest_checkpoint_id="the most recently created checkpoint",
        latest_checkpoint_size_bytes="its size in bytes",
        latest_checkpoint_size_gib="its size in GiB",
        first_checkpoint_at="creation time of the first checkpoint",
        last_checkpoint_at="creation time of the latest checkpoint",
        hours_to_first_checkpoint="hours from job creation to its first checkpoint",
        wall_clock_hours="for a finished job (`COMPLETED`, `FAILED`, `STOPPED`, `DEPLOY_FAILED`): hours "
        "from `created_at` to `updated_at`; null while it runs",
        gpu_hours_estimate="`total_gpu_count` (`gpu_count` x `node_count`) x `wall_clock_hours`. An estimate: it counts "
        "queueing time and any update after the end as running time; null while the job runs",
        first_seen_at="the sync that first archived the job",
        last_seen_at=LISTED,
        deleted_at="when the job or its project was noticed gone, whichever was first",
        project_deleted_at="when its project was noticed gone",
    ),
    "project_storage_daily": About(
        "One row per project per UTC calendar day, from the day the project was created (or first archived, "
        "or its first checkpoint was made, whichever is earliest) to today: what the project held on Baseten "
        "at the end of that day, as far as the archive knows. A checkpoint is live from its `created_at` (its "
        "first sighting if it has none, or if `created_at` is later), through every version of it in "
        "`checkpoint_versions` that is not a deletion, until a sync saw it, its job or its project gone: a "
        "checkpoint deleted and later restored is not live in between, and one that existed only within a "
        "single day is never live. Each day counts a checkpoint's size as of that day's version. "
        "A deleted project stays, with zeros, so charts show the drop. The days go back at most ten years "
        "(3,652 days) before today: what happened earlier counts on the first day shown.",
        project_id="Baseten project id",
        project_name="project name (today's)",
        project_label=PROJECT_LABEL,
        team_name="the project's team on that day, so a project that moved keeps its earlier days under the "
        "team that had it (the team in its version current at the end of the day, in "
        "`training_project_versions`; before the archive first saw the project, the earliest team known); "
        "null where it had none",
        day="the UTC calendar day (a `date` on PostgreSQL, `YYYY-MM-DD` text on SQLite)",
        live_checkpoint_count="checkpoints live that day",
        live_size_bytes="their total size in bytes (exact, as in `job_facts`)",
        live_size_gib=SAME_IN_GIB,
    ),
    "checkpoint_lora_modules": About(
        "One row per LoRA checkpoint and target module, to group and filter by module (a config that names "
        "one module as a string counts it once; a full checkpoint has no rows).",
        project_id="Baseten project id",
        job_id="Baseten job id",
        checkpoint_id="the checkpoint's id, unique within its job",
        module="one module the adapter targets, e.g. `q_proj` (or the regular expression a config gave as a string)",
        deleted_at="when a sync saw the checkpoint gone, or null while it is live",
    ),
    "gpu_hours_daily": About(
        "One row per UTC calendar day, job and instance type: the GPU-hours the job spent that day. A run goes "
        "from the job's `created_at` to its `updated_at` once it finished (as `job_facts.wall_clock_hours`), or, "
        "while it runs, to the last sync that saw it; each day gets the part of it that fell on that day. "
        "Summed over its days, a finished job's `gpu_hours` is its `job_facts.gpu_hours_estimate`. "
        "\"GPU-hours this month\" is `SUM(gpu_hours) WHERE day >= '2026-12-01'`. Hours more than ten years "
        "(3,652 days) before today or after today are not counted: only a timestamp no real run has puts any there.",
        day="the UTC calendar day (a `date` on PostgreSQL, `YYYY-MM-DD` text on SQLite)",
        project_id="Baseten project id",
        project_name="project name",
        project_label=PROJECT_LABEL,
        team_name=TEAM,
        job_id="Baseten job id",
        job_name="job name",
        job_status="the job's current status",
        instance_type_id="the instance type it ran on",
        instance_type_name="that type's name",
        gpu_type="GPU model, e.g. `H100`",
        gpu_count="GPUs per node",
        node_count="nodes: `node_count` as sent, else the nodes its instance type names, else 1 (as in `job_facts`)",
        total_gpu_count="GPUs per node x nodes",
        hours="hours of the run that fell on this day",
        gpu_hours="`hours` x `total_gpu_count`",
    ),
    # Tables.
    "training_projects": About(
        "One row per Baseten training project ever archived, as it is now (or was when it went away).",
        id="Baseten project id (primary key)",
        name="project name",
        team_name="the team that owns the project, or null",
        created_at="when Baseten created the project (UTC)",
        updated_at="when Baseten last updated it (UTC)",
        extra=EXTRA,
        first_seen_at=FIRST_SEEN,
        last_seen_at=LISTED,
        deleted_at="when a full sync noticed it gone from the API; null while it exists",
        valid_from=_valid_from("training_project_history"),
        latest_job_id="the id of the project's latest job, as the API's `latest_job` names it; null when it "
        "has none (or before revision 0009 read it)",
    ),
    "instance_types": About(
        "One row per instance type (the hardware a job runs on) that a synced job used.",
        id="Baseten instance type id, e.g. `H100:8x208x1800` (primary key)",
        name="instance type name, e.g. `8xH100`",
        memory_limit_mib="memory, in MiB",
        millicpu_limit="CPU, in thousandths of a core",
        gpu_count=GPU_COUNT,
        gpu_type=GPU_TYPE,
        gpu_memory_limit_mib="memory per GPU, in MiB",
        extra=EXTRA,
        first_seen_at=FIRST_SEEN,
        last_seen_at="the sync that last saw a job use it",
        valid_from=_valid_from("instance_type_history"),
        nodes='the nodes its id or name names (`H200:2x8x128x1600`: 2; "2 Nodes of 8 H200 GPUs": 2), or null '
        "when neither does; the API describes one node, so `gpu_count` and the limits are per node",
    ),
    "training_jobs": About(
        "One row per Baseten training job ever archived, as it is now (or was when it went away).",
        id="Baseten training job id (primary key)",
        training_project_id="its project (`training_projects.id`)",
        instance_type_id="what it runs on (`instance_types.id`)",
        name="job name, or null",
        current_status="the job's status, e.g. `TRAINING_JOB_RUNNING`",
        error_message="the API's error message, for failed jobs",
        checkpoint_sync_status="the job's checkpoint upload state",
        priority="scheduling priority",
        user_email="who started the job",
        availability_model="`dedicated` or `spot`, as the API sent it (baseten-cli's mocks send `DEDICATED`; "
        "rows archived before revision 0009 hold it lower-cased); null for jobs from before it was sent",
        created_at="when the job was created (UTC)",
        updated_at="when Baseten last updated it (UTC)",
        extra=EXTRA,
        first_seen_at=FIRST_SEEN,
        last_seen_at=LISTED,
        deleted_at="when a sync noticed it gone from its project's job list",
        checkpoints_fetched_at="when its checkpoints were last read in full",
        checkpoints_fetched_job_updated_at="the job's `updated_at` at that read",
        checkpoints_all_complete="whether every checkpoint had finished uploading then "
        "(lets incremental runs skip the job)",
        valid_from=_valid_from("training_job_history"),
        checkpoints_fetched_job_status="the job's status at that read (a job whose status moved is read again)",
        node_count="nodes the job runs on, as the API sent it (era D, 2026-08-07, on); null when not sent "
        "(`job_facts.node_count` then counts the nodes its instance type names)",
    ),
    "lora_adapter_configs": About(
        "One row per distinct LoRA adapter config: the same JSON in any key order is one row.",
        id="surrogate key",
        config_sha256="SHA-256 of the canonical JSON (unique)",
        r="LoRA rank",
        lora_alpha="LoRA alpha",
        lora_dropout="LoRA dropout",
        target_modules="JSON: a list of module names, or one regular expression",
        task_type="PEFT task type, e.g. `CAUSAL_LM`",
        peft_type="PEFT method, e.g. `LORA`",
        base_model_name_or_path="the base model the adapter was trained from",
        config="JSON: the whole `adapter_config.json` as received",
        first_seen_at=FIRST_SEEN,
        last_seen_at="the sync that last saw a checkpoint use it",
    ),
    "checkpoints": About(
        "One row per checkpoint of a job ever archived, as it is now (or was when it went away); "
        "(`training_job_id`, `checkpoint_id`) is unique.",
        id="surrogate key",
        training_job_id="its job (`training_jobs.id`)",
        checkpoint_id="its id within the job, e.g. `checkpoint-500`",
        created_at="when Baseten created it (UTC)",
        checkpoint_type="`lora`, `full`, `whisper`, or what the API sent",
        base_model="the base model, or null",
        lora_adapter_config_id="its adapter config (`lora_adapter_configs.id`), or null",
        size_bytes="size in bytes",
        sync_status="upload state: `SYNCING`, `COMPLETE`/`COMPLETED`, or null",
        extra=EXTRA,
        first_seen_at=FIRST_SEEN,
        last_seen_at="the sync that last wrote the row: its first sighting, a change, or (once deleted) its "
        "last sighting. An unchanged checkpoint is not rewritten each night (that would rewrite the whole "
        "table): while it is live it was also seen at its job's `checkpoints_fetched_at`. "
        "`checkpoint_facts.last_seen_at` combines the two",
        deleted_at="when a sync noticed it gone from its job's checkpoint list (or its job or project gone)",
        valid_from=_valid_from("checkpoint_history"),
        target="what the checkpoint is for (`sampler` or `trainer` on Loops checkpoints), as sent; null when not sent",
        training_job_id_inferred="true when the entry named no `training_job_id` and its job is the one whose "
        "checkpoint listing it came from (baseten-cli's own mocks send none); false when the API said it",
    ),
    "sync_runs": About(
        "One row per `archiver sync`, written at its start and completed at its end.",
        id="run number",
        started_at="when the run started (UTC)",
        finished_at="when it ended; null while running",
        status="`running`, `succeeded`, `partial`, `failed` or `interrupted`",
        scope="JSON: the projects and jobs asked for, or null for everything",
        full_sync="whether `--full` re-read every job",
        projects="projects listed",
        jobs="jobs listed",
        jobs_fetched="jobs whose checkpoints were read",
        jobs_skipped="jobs skipped because they could not have changed",
        jobs_failed="jobs that failed (see `sync_errors`)",
        checkpoints_inserted="checkpoints archived for the first time",
        checkpoints_updated="checkpoints whose values changed",
        checkpoints_unchanged="checkpoints read with nothing new",
        checkpoints_deleted="checkpoints newly marked deleted",
        requests="HTTP requests made",
        error_summary="one line on what went wrong, or null",
        archiver_version="the archiver version that ran",
        hostname="the machine it ran on",
        pid="its process id",
        options="JSON: what else decided what the run archived (`allow_mass_delete`, `recheck_after_seconds`), "
        "for `archiver rebuild`",
    ),
    "api_responses": About(
        "Every API response a run acted on (answers it parsed, bodies it could not parse, 404s it recorded as "
        "gone), stored in the transaction of the work it fed: nothing the API sent is lost, and "
        "`archiver rebuild` replays them. The API key is masked in bodies as `<api key>`.",
        id="surrogate key",
        sync_run_id="the run (`sync_runs.id`)",
        method="`GET` or `POST`",
        path="the request path, e.g. `/v1/training_projects/n4q95w5/jobs`",
        request_body="the JSON the request sent (the job search), or null",
        status="the HTTP status",
        body_id="the body (`api_response_bodies.id`)",
        headers="the response headers the archiver acts on (`Date`, `Link`), the key masked, as a JSON object; "
        "null when it had none (and for responses kept before revision 0010)",
    ),
    "api_response_bodies": About(
        "Each distinct response body once, compressed: a night that sees the same answers as the last adds "
        "no bodies.",
        id="surrogate key",
        sha256="SHA-256 of the body as received, the key masked (of the bytes received when withheld; unique)",
        size_bytes="the body's size, uncompressed",
        encoding="how `body` is compressed: `zlib` (read it with `zlib.decompress`)",
        content_type="the response's `Content-Type`",
        body="the compressed body (empty when withheld)",
        withheld="why the body was not kept: it was in no encoding JSON allows (UTF-8, -16, -32), so it could not "
        "be scanned for the API key; null for every body kept",
    ),
    "rejected_entries": About(
        "One row per entry of a listing that broke the contract: quarantined alone. The rest of its listing "
        "was archived; it overwrote nothing and was never taken as gone. The next night that sends it whole "
        "archives it as usual.",
        id="surrogate key",
        sync_run_id="the run (`sync_runs.id`)",
        endpoint="the request, e.g. `GET /v1/training_projects/n4q95w5/jobs/p7qr9qv/checkpoints`",
        project_id="the project whose listing held it, or null",
        job_id="the job whose listing held it (or the job the entry is), or null",
        entry_id="the entry's own id (a project or job id, or a `checkpoint_id`) when it has a readable one",
        field="the JSON path of the value at fault, e.g. `checkpoints[3].size_bytes`",
        reason="what is wrong with it",
        entry="the entry as received, as JSON text (the API key masked; cut at 1,000,000 characters)",
        rejected_at="when the run quarantined it (UTC)",
    ),
    "sync_errors": About(
        "One row per project or job a sync failed on or found gone.",
        id="surrogate key",
        sync_run_id="the run (`sync_runs.id`)",
        project_id="the project concerned, or null",
        job_id="the job concerned, or null",
        kind="`api`, `malformed`, `gone`, `database`, ...",
        message="what went wrong",
        occurred_at="when it happened (UTC)",
    ),
    "facts_inputs": About(
        "Bookkeeping of the facts tables: one row per facts table, with a fingerprint of the rows it is "
        "computed from as they were at its last rewrite. A sync rewrites the rows of `checkpoint_facts` and "
        "`checkpoint_lora_modules` of the jobs it writes as it writes them. At its end it rewrites, there and "
        "in `job_facts` and `gpu_hours_daily`, the rows of the other jobs written since and of the jobs of "
        "projects whose name, team, deletion or label changed (every row when an instance type changed); "
        "`gpu_hours_daily` on the same UTC day also those of the jobs still running; `job_facts`' hours are "
        "brought to the sync's time. It keeps `project_storage_daily` while its fingerprint and the UTC day "
        "are as they were.",
        name="the facts table, e.g. `checkpoint_facts`",
        inputs="the fingerprint: JSON of each input table's row count and latest run stamps, the latest "
        "stamp of all (rows stamped after it were written since), a digest of what the facts read of the "
        "instance types and one of each project (`shared`), and for `project_storage_daily` and "
        "`gpu_hours_daily` the UTC `day` it counted to",
        refreshed_at="when the table was last rewritten (UTC)",
    ),
    # History views written by hand (history tables and *_versions views are derived: see below).
    "training_job_status_history": About(
        "A view of `training_job_versions`: a row for each version whose status differs from the version "
        "before it, the first one included.",
        training_job_id="the job (`training_jobs.id`)",
        status="the status seen",
        observed_at="when a sync first saw it (the change happened since the previous sync)",
        sync_run_id="that sync (`sync_runs.id`), where the archive has it",
    ),
}


def _versions_of(versioned: Versioned, *, view: bool) -> About:
    """Describe a history table, or with `view` a versions view, from the table whose versions it keeps."""
    current, history = versioned.table.name, versioned.history.name
    about = ABOUT.get(current, About(""))  # a missing description stays missing (the tests say where)
    noun = history.removesuffix("_history").replace("_", " ")
    what = (
        f"Every version of every {noun}: the rows of `{history}`, then each current row of `{current}` "
        "with `valid_to` null."
        if view
        else f"The earlier versions of each row of `{current}`, each with the period it held "
        f"(`valid_from` to `valid_to`); `{versioned.versions}` adds the current ones."
    )
    columns = {name: about.columns[name] for name in versioned.identity if name in about.columns}
    columns["id"] = f"which {noun} this is a version of (`{current}.id`)"
    columns |= {
        name: f"in this version: {about.columns[name]}" for name in versioned.values if name in about.columns
    }
    ended = "when a sync saw this version end: the row changed, was deleted or came back"
    return About(
        what,
        **columns,
        valid_from="when a sync first saw this version",
        valid_to=f"{ended}; null for the current version" if view else ended,
    )


def _live(facts: str) -> About:
    """Describe the view a facts table is refreshed from, from the table's description."""
    about = ABOUT.get(facts, About(""))
    return About(
        f"What `{facts}` holds, computed from the archive as it is at the moment of the query (`{facts}` "
        "holds these rows as of the end of the last sync, and reads much faster).",
        **about.columns,
    )


def describe(
    tables: Iterable[sa.Table], versioned: Iterable[Versioned], facts: Iterable[sa.Table] = ()
) -> None:
    """Set each table's and column's comment to its description (None where it has none yet)."""
    derived = {f"{table.name}_live": _live(table.name) for table in facts}
    for keeps in versioned:
        derived[keeps.history.name] = _versions_of(keeps, view=False)
        derived[keeps.versions] = _versions_of(keeps, view=True)
    refreshed = {table.name for table in facts}
    for table in tables:
        about = ABOUT.get(table.name) or derived.get(table.name)
        table.comment = about.what if about else None
        if table.comment and table.name in refreshed:
            table.comment += (
                f" Brought up to date at the end of each sync from the view `{table.name}_live`, which computes "
                "the same columns at the moment of the query."
            )
        for column in table.columns:
            column.comment = about.columns.get(column.name) if about else None
