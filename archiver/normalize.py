"""Turn Baseten API JSON into row dicts and listings: lenient parsing, no I/O.

The contract of each object lives in `archiver.contract`; here its rows are put together and the
listings read. A listing is lenient where the answer is known: an entry that breaks the contract
is quarantined on its own (`Rejected`), its fellows stand, and it is never taken as gone; a
checkpoint without `training_job_id` belongs to the job whose listing it came from.

A listing endpoint has no paging; a response that says there is more (any marker
`archiver.paging` knows) keeps its entries but is not `complete`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from archiver import paging
from archiver.contract import (
    CHECKPOINT,
    COMPLETE_SYNC_STATUSES,
    CONTRACT,
    INSTANCE_TYPE,
    MAX_JSON_DEPTH,
    MAX_KEY_BYTES,
    TERMINAL_JOB_STATUSES,
    TRAINING_JOB,
    TRAINING_PROJECT,
    Row,
    Where,
    _short,
    canonical_json,
    document,
    integer,
    items,
    lora_config_row,
    obj,
    parse_timestamp,
    text,
    timestamp,
    unstorable,
)
from archiver.errors import MalformedResponse

__all__ = [
    "CHECKPOINT",
    "COMPLETE_SYNC_STATUSES",
    "CONTRACT",
    "INSTANCE_TYPE",
    "MAX_JSON_DEPTH",
    "MAX_KEY_BYTES",
    "TERMINAL_JOB_STATUSES",
    "TRAINING_JOB",
    "TRAINING_PROJECT",
    "Row",
    "Where",
    "canonical_json",
    "document",
    "integer",
    "items",
    "lora_config_row",
    "obj",
    "parse_timestamp",
    "text",
    "timestamp",
]


def project_row(data: Any, where: Where) -> Row:
    """Normalize a TrainingProjectV1; its latest job is kept by id (the job itself is read from its listing)."""
    row = TRAINING_PROJECT.read(data, where)
    latest = row.pop("latest_job")
    latest_id = latest.get("id") if latest is not None else None
    # Read, not checked: a broken latest job must not fail its project (the job listing checks it).
    row["latest_job_id"] = latest_id if isinstance(latest_id, str) and _storable_id(latest_id) else None
    return row


def _storable_id(value: str) -> bool:
    return bool(value) and unstorable(value) is None and len(value.encode()) <= MAX_KEY_BYTES


def storable_text(value: str) -> str:
    """Text any database stores: NUL and unpaired surrogates (quoted from a response) spelled as escapes."""
    if unstorable(value) is None:
        return value
    return value.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


# The nodes an instance type names: training types are `<GPU>:<nodes>x<GPUs>x<vCPUs>x<GiB>`
# (`H200:2x8x128x1600`) and say so in their name ("... 2 Nodes of 8 H200 GPUs ..."). Model-serving
# ids have three numbers (`A10G:2x24x96`: the first is GPUs), so only four count.
_NODES_IN_ID = re.compile(r"[^:]+:([1-9][0-9]{0,5})x[0-9]+x[0-9]+x[0-9]+")
_NODES_IN_NAME = re.compile(r"\b([1-9][0-9]{0,5}) nodes? of\b", re.IGNORECASE)


def named_nodes(type_id: str, name: str | None) -> int | None:
    """How many nodes an instance type's id or name says it spans; None when neither says."""
    if match := _NODES_IN_ID.fullmatch(type_id):
        return int(match[1])
    if name and (match := _NODES_IN_NAME.search(name)):
        return int(match[1])
    return None


def instance_type_row(data: Any, where: Where) -> Row:
    """Normalize an InstanceTypeV1, with the nodes its id or name names."""
    return _with_nodes(INSTANCE_TYPE.read(data, where))


def _with_nodes(instance_type: Row) -> Row:
    instance_type["nodes"] = named_nodes(instance_type["id"], instance_type["name"])
    return instance_type


@dataclass
class JobRecord:
    """One job as the API described it: its row and the instance type it ran on."""

    row: Row
    instance_type: Row | None


def job_record(data: Any, where: Where) -> JobRecord:
    """Normalize a TrainingJobV1."""
    data = obj(data, where)
    where = Where(where.project_id, TRAINING_JOB.key("id").take(data, where), where.path)
    row = TRAINING_JOB.read(data, where)
    if where.project_id is not None and row["training_project_id"] != where.project_id:
        # Archiving it would move the job to another project, or break the foreign key.
        raise (where / "training_project_id").fail(
            f"expected project {where.project_id!r}, got {_short(row['training_project_id'])}"
        )
    instance_type = _with_nodes(row.pop("instance_type"))
    user = row.pop("user")
    extra = row["extra"] or {}
    for key, nested in (("training_project", row.pop("training_project")), ("user", user)):
        if nested is not None and nested["extra"] is not None:
            extra[key] = dict(data[key])  # the API added keys to it: keep the whole object as received
    row |= {
        "instance_type_id": instance_type["id"],
        "user_email": user["email"] if user else None,
        "extra": extra or None,
    }
    return JobRecord(row=row, instance_type=instance_type)


def more_than_listed(
    payload: Mapping[str, Any], listed: int, where: Where, link: str = ""
) -> MalformedResponse | None:
    """Say what shows a response has more entries than it lists, or None when nothing does.

    Baseten's listings have no paging; if one starts to page, what a response lacks is not
    gone. The markers recognised, and what says there is no more, are `archiver.paging.MARKERS`.
    """
    said = paging.more_than_listed(payload, listed, link)
    if not said:
        return None
    return where.fail(
        f"the response says there is more ({', '.join(said)}); "
        "this endpoint has no paging the archiver knows, so the listing is incomplete"
    )


# What `rejected_entries.entry` keeps of an entry at most: enough to see what was wrong with it.
MAX_KEPT_ENTRY_CHARS = 1_000_000


@dataclass(frozen=True)
class Rejected:
    """An entry of a listing that broke the contract: quarantined alone, its fellows stand.

    It overwrites nothing and is never taken as gone: `entry_id` (its id, when it has a readable
    one) is spoken for by its listing, though not archived. Without one, the listing cannot say
    which archived row it is, so nothing may be inferred from what the listing lacks.
    """

    error: MalformedResponse
    entry: Any
    entry_id: str | None

    def entry_json(self) -> str:
        """The entry as JSON text (ASCII, so any database stores it), cut to a bounded length."""
        try:
            text_ = json.dumps(self.entry, ensure_ascii=True, allow_nan=True)
        except (RecursionError, ValueError, TypeError):
            return json.dumps(f"(not kept: the entry nests deeper than {MAX_JSON_DEPTH} levels)")
        return text_ if len(text_) <= MAX_KEPT_ENTRY_CHARS else text_[:MAX_KEPT_ENTRY_CHARS] + "…"


def rejected_entry(exc: MalformedResponse, entry: Any, id_key: str) -> Rejected:
    entry_id = entry.get(id_key) if isinstance(entry, Mapping) else None
    readable = entry_id if isinstance(entry_id, str) and _storable_id(entry_id) else None
    return Rejected(exc, entry, readable)


@dataclass
class Listing:
    """What every listing shares: the entries it quarantined, and whether it says there is more.

    A listing is `complete` when it says nothing of more pages and every entry it quarantined
    has a readable id: then what it lacks is gone, but for the ids it `refused`.
    """

    rejected: list[Rejected] = field(default_factory=list, kw_only=True)
    incomplete: MalformedResponse | None = field(default=None, kw_only=True)

    @property
    def complete(self) -> bool:
        return self.incomplete is None and all(r.entry_id is not None for r in self.rejected)

    @property
    def refused(self) -> set[str]:
        """The ids of entries quarantined: listed, so not gone, but not archived either."""
        return {r.entry_id for r in self.rejected if r.entry_id is not None}

    @property
    def errors(self) -> list[MalformedResponse]:
        """What to fail: each quarantined entry, and the listing itself when it says there is more."""
        return [r.error for r in self.rejected] + ([self.incomplete] if self.incomplete else [])


@dataclass
class CheckpointListing(Listing):
    """A job's checkpoint listing, normalized: the job, its checkpoints and their LoRA configs."""

    project_id: str
    job: JobRecord
    checkpoints: list[Row]  # `lora_config_sha256` stands where the config id will go
    lora_configs: dict[str, Row] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)

    @property
    def checkpoint_count(self) -> int:
        """How many checkpoints the listing had that the contract took."""
        return len(self.checkpoints)

    @property
    def all_complete(self) -> bool:
        """Whether every checkpoint finished uploading (`COMPLETE` and `COMPLETED` alike).

        Never while the job says its uploader is still `SYNCING`: it may list more checkpoints
        yet, even when those listed so far (or none at all) are complete. Nor when the listing is
        incomplete or quarantined an entry (the next night must read it again). Servers that omit a
        checkpoint's `sync_status` give no per-checkpoint signal: such a checkpoint counts as complete.
        """
        if self.job.row["checkpoint_sync_status"] == "SYNCING" or not self.complete or self.rejected:
            return False
        return all(
            row["sync_status"] in COMPLETE_SYNC_STATUSES or row["sync_status"] is None
            for row in self.checkpoints
        )


def checkpoint_listing(
    payload: Any, project_id: str, job_id: str, link: str = "", listed_job: JobRecord | None = None
) -> CheckpointListing:
    """Normalize a GetTrainingJobCheckpointsResponseV1 for one job.

    The job is the response's `training_job`; a response without one (truss's mocks) is of the job
    its project's listing described (`listed_job`), the one whose checkpoints were asked for. An entry
    that breaks the contract, or names another job, is quarantined alone. When a checkpoint id repeats
    within one response, the last entry wins: the API lists checkpoints oldest first, so the last is
    the newest word on it.
    """
    where = Where(project_id, job_id)
    payload = obj(payload, where)
    job = listing_job(payload, where, listed_job)
    entries = where / "checkpoints"
    listed = items(required(payload, "checkpoints", where), entries)
    by_id: dict[str, Row] = {}
    configs: dict[str, Row] = {}
    duplicates: list[str] = []
    rejected: list[Rejected] = []
    for index, entry in enumerate(listed):
        try:
            row, config = checkpoint_row(entry, entries / index, job_id)
        except MalformedResponse as exc:
            rejected.append(rejected_entry(exc, entry, "checkpoint_id"))
            continue
        if row["checkpoint_id"] in by_id:
            duplicates.append(row["checkpoint_id"])
            del by_id[row["checkpoint_id"]]  # re-insert so the survivor keeps the later position
        by_id[row["checkpoint_id"]] = row
        if config is not None:
            configs[config["config_sha256"]] = config
    incomplete = more_than_listed(payload, len(listed), where, link)
    return CheckpointListing(
        project_id,
        job,
        list(by_id.values()),
        configs,
        duplicates,
        rejected=rejected,
        incomplete=incomplete,
    )


def listing_job(payload: Mapping[str, Any], where: Where, listed_job: JobRecord | None) -> JobRecord:
    """The job a checkpoint listing is of: its `training_job`, else the one its project's listing described."""
    job_id = where.job_id
    if "training_job" in payload or listed_job is None:
        job = job_record(required(payload, "training_job", where), where / "training_job")
        if job.row["id"] != job_id:
            raise (where / "training_job.id").fail(f"expected job {job_id!r}, got {_short(job.row['id'])}")
        return job
    return listed_job


def required(payload: Mapping[str, Any], key: str, where: Where) -> Any:
    if key not in payload:
        raise (where / key).fail("required field is missing")
    return payload[key]


@dataclass
class ProjectListing(Listing):
    """The organisation's project listing, normalized."""

    projects: list[Row]


def project_listing(payload: Any, link: str = "") -> ProjectListing:
    """Normalize a GET /v1/training_projects response."""
    where = Where(path="GET /v1/training_projects")
    payload = obj(payload, where)
    listed = items(required(payload, "training_projects", where), where / "training_projects")
    projects: dict[str, Row] = {}
    rejected: list[Rejected] = []
    for index, entry in enumerate(listed):
        try:
            row = project_row(entry, Where(path=f"training_projects[{index}]"))
        except MalformedResponse as exc:
            exc.located(project_id=_entry_id(entry), job_id=None)
            rejected.append(rejected_entry(exc, entry, "id"))
            continue
        projects.pop(row["id"], None)  # listed twice: the later entry wins, as for checkpoints
        projects[row["id"]] = row
    incomplete = more_than_listed(payload, len(listed), where, link)
    return ProjectListing(list(projects.values()), rejected=rejected, incomplete=incomplete)


def _entry_id(entry: Any) -> str | None:
    entry_id = entry.get("id") if isinstance(entry, Mapping) else None
    return entry_id[:80] if isinstance(entry_id, str) and entry_id else None


@dataclass
class JobListing(Listing):
    """A project's job listing, normalized: the project, its jobs, and the entries quarantined."""

    project: Row
    jobs: list[JobRecord]


def job_listing(payload: Any, project_id: str, link: str = "") -> JobListing:
    """Normalize a GET /v1/training_projects/{id}/jobs response for one project.

    The project itself must be the one asked for: archiving another would overwrite it and mark
    its jobs deleted. A job listed twice counts once, the later entry winning.
    """
    where = Where(project_id)
    payload = obj(payload, where)
    project_where = where / "training_project"
    project = project_row(required(payload, "training_project", where), project_where)
    if project["id"] != project_id:
        raise (project_where / "id").fail(f"expected project {project_id!r}, got {_short(project['id'])}")
    listed = items(required(payload, "training_jobs", where), where / "training_jobs")
    jobs: dict[str, JobRecord] = {}
    rejected: list[Rejected] = []
    for index, entry in enumerate(listed):
        try:
            record = job_record(entry, where / "training_jobs" / index)
        except MalformedResponse as exc:
            rejected.append(rejected_entry(exc, entry, "id"))
            continue
        jobs.pop(record.row["id"], None)
        jobs[record.row["id"]] = record
    incomplete = more_than_listed(payload, len(listed), where, link)
    return JobListing(project, list(jobs.values()), rejected=rejected, incomplete=incomplete)


@dataclass
class JobSearch(Listing):
    """What a job search says of one job: its project (None when not found), and the entries quarantined."""

    project_id: str | None


def project_of_job(payload: Any, job_id: str, link: str = "") -> JobSearch:
    """The project of `job_id` in a POST /v1/training_jobs/search response.

    Another job's broken entry is quarantined and the search goes on; the job's own entry, broken,
    still says its project when `training_project_id` reads. A response that says there is more
    answers only when it lists the job: its absence proves nothing.
    """
    where = Where(job_id=job_id, path="POST /v1/training_jobs/search")
    payload = obj(payload, where)
    found = items(required(payload, "training_jobs", where), where / "training_jobs")
    rejected: list[Rejected] = []
    for index, entry in enumerate(found):
        entry_where = Where(job_id=job_id, path=f"training_jobs[{index}]")
        try:
            record = job_record(entry, entry_where)
        except MalformedResponse as exc:
            rejected.append(rejected_entry(exc, entry, "id"))
            if _entry_id(entry) == job_id and isinstance(entry, Mapping):
                project = entry.get("training_project_id")
                if isinstance(project, str) and _storable_id(project):
                    return JobSearch(project, rejected=rejected)
            continue
        if record.row["id"] == job_id:
            return JobSearch(str(record.row["training_project_id"]), rejected=rejected)
    if incomplete := more_than_listed(payload, len(found), where, link):
        raise incomplete
    return JobSearch(None, rejected=rejected)


def checkpoint_row(data: Any, where: Where, job_id: str) -> tuple[Row, Row | None]:
    """Normalize one TrainingJobCheckpointV1 and its LoRA config, if any."""
    row = CHECKPOINT.read(data, where)
    if row["training_job_id"] is None:  # baseten-cli's mocks: the job is the one listed
        row["training_job_id"], row["training_job_id_inferred"] = job_id, True
    elif row["training_job_id"] != job_id:
        raise (where / "training_job_id").fail(
            f"expected job {job_id!r}, got {_short(row['training_job_id'])}"
        )
    else:
        row["training_job_id_inferred"] = False
    config = row.pop("lora_adapter_config")
    row["lora_config_sha256"] = config["config_sha256"] if config else None
    return row, config
