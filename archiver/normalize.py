"""Turn Baseten API JSON into row dicts: validation and lenient parsing, no I/O.

Strict where it matters (ids, keys and the types the schema stores), lenient where the API
is loose: optional keys may be missing, unknown statuses and types are kept as received,
and every field without a column of its own lands in the row's `extra` document.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from archiver.errors import MalformedResponse

Row = dict[str, Any]

COMPLETE_SYNC_STATUSES = frozenset({"COMPLETE", "COMPLETED"})
TERMINAL_JOB_STATUSES = frozenset(
    {"TRAINING_JOB_COMPLETED", "TRAINING_JOB_FAILED", "TRAINING_JOB_STOPPED", "TRAINING_JOB_DEPLOY_FAILED"}
)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

# Keys that become columns (or foreign keys); anything else the API sends goes to `extra`.
_PROJECT_KEYS = {"id", "name", "team_name", "created_at", "updated_at", "latest_job"}
_INSTANCE_TYPE_KEYS = {
    "id",
    "name",
    "memory_limit_mib",
    "millicpu_limit",
    "gpu_count",
    "gpu_type",
    "gpu_memory_limit_mib",
}
_JOB_KEYS = {
    "id",
    "training_project_id",
    "training_project",
    "instance_type",
    "name",
    "current_status",
    "error_message",
    "checkpoint_sync_status",
    "priority",
    "user",
    "availability_model",
    "created_at",
    "updated_at",
}
_CHECKPOINT_KEYS = {
    "checkpoint_id",
    "training_job_id",
    "created_at",
    "checkpoint_type",
    "base_model",
    "lora_adapter_config",
    "size_bytes",
    "sync_status",
}
_LORA_COLUMNS = ("r", "lora_alpha", "lora_dropout", "target_modules", "task_type", "peft_type")

_MISSING = object()
_FRACTION = re.compile(r"[.,](\d{1,6})\d*")


class Where:
    """Where in a response a value sits, for error messages: project, job and a JSON path."""

    def __init__(self, project_id: str | None = None, job_id: str | None = None, path: str = "") -> None:
        self.project_id = project_id
        self.job_id = job_id
        self.path = path

    def __truediv__(self, key: str | int) -> Where:
        step = f"[{key}]" if isinstance(key, int) else (f".{key}" if self.path else key)
        return Where(self.project_id, self.job_id, self.path + step)

    def fail(self, problem: str) -> MalformedResponse:
        field_ = f"field {self.path!r}: " if self.path else ""
        return MalformedResponse(f"{field_}{problem}", project_id=self.project_id, job_id=self.job_id)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def obj(value: Any, where: Where) -> Mapping[str, Any]:
    """Return value if it is a JSON object."""
    if not isinstance(value, Mapping):
        raise where.fail(f"expected an object, got {_describe(value)}")
    return value


def items(value: Any, where: Where) -> list[Any]:
    """Return value if it is a JSON array."""
    if not isinstance(value, list):
        raise where.fail(f"expected a list, got {_describe(value)}")
    return value


def _unstorable(value: str) -> str | None:
    """Say why a string cannot go into both databases, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character, which PostgreSQL cannot store"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired UTF-16 surrogate, which is not valid Unicode text"
    return None


def document(value: Any, where: Where) -> Any:
    """Return a JSON value if both databases can store it exactly; raise naming the problem."""
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise where.fail("contains NaN or Infinity, which JSON cannot carry") from None
    # json.dumps escapes NUL as \u0000 even with ensure_ascii=False; a literal backslash-u0000
    # in a string also matches, so confirm by walking before refusing.
    if "\\u0000" in encoded or _unstorable(encoded):
        for path, text_ in _strings(value, where.path):
            if problem := _unstorable(text_):
                raise Where(where.project_id, where.job_id, path).fail(problem)
    return value


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Yield every string in a JSON value, object keys included, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            step = f"{path}.{key}" if path else str(key)
            yield step, str(key)
            yield from _strings(item, step)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _get(data: Mapping[str, Any], key: str, where: Where, *, required: bool) -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        if required:
            raise (where / key).fail("required field is missing")
        return None
    return value


def text(
    data: Mapping[str, Any], key: str, where: Where, *, required: bool = False, nullable: bool = True
) -> Any:
    """Read a string field; a missing optional key is null."""
    value = _get(data, key, where, required=required)
    if value is None:
        if not nullable and key in data:
            raise (where / key).fail("must not be null")
        return None
    if not isinstance(value, str):
        raise (where / key).fail(f"expected a string, got {_describe(value)}")
    if problem := _unstorable(value):
        raise (where / key).fail(problem)
    return value


def key_text(data: Mapping[str, Any], key: str, where: Where) -> str:
    """Read a required, non-empty string used as an identifier."""
    value = text(data, key, where, required=True, nullable=False)
    if value is None or value == "":
        raise (where / key).fail("required identifier is null or empty")
    return str(value)


def integer(
    data: Mapping[str, Any], key: str, where: Where, *, required: bool = False, bits: int = 64
) -> int | None:
    """Read an integer field that must fit a column of `bits` bits (64, or 32 for INTEGER)."""
    value = _get(data, key, where, required=required)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        # 1.0 is an integer in JSON Schema, but nothing else with a fraction is.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise (where / key).fail(f"expected an integer, got {_describe(value)}")
    bound = INT64_MAX if bits == 64 else INT32_MAX
    if not -bound - 1 <= value <= bound:
        raise (where / key).fail(f"integer {value} does not fit in {bits} bits")
    return value


def timestamp(data: Mapping[str, Any], key: str, where: Where, *, required: bool = False) -> datetime | None:
    """Read an ISO 8601 timestamp as an aware UTC datetime (naive input is taken as UTC)."""
    value = text(data, key, where, required=required)
    if value is None:
        return None
    return parse_timestamp(value, where / key)


def parse_timestamp(value: str, where: Where) -> datetime:
    """Parse ISO 8601 with or without fraction or offset; keep microseconds, drop finer digits.

    RFC 3339 allows a lowercase `t` and `z`; an instant outside years 1-9999 once moved to UTC
    (e.g. `0001-01-01T00:00:00+01:00`) cannot be stored and fails like any malformed value.
    """
    cleaned = _FRACTION.sub(lambda m: "." + m.group(1).ljust(6, "0"), value.strip().upper())
    try:
        parsed = datetime.fromisoformat(cleaned)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise where.fail(f"expected an ISO 8601 timestamp in years 1-9999 UTC, got {value[:60]!r}") from None


def _extra(data: Mapping[str, Any], known: set[str], where: Where) -> dict[str, Any] | None:
    extra = {k: v for k, v in data.items() if k not in known}
    return document(extra, where) if extra else None


def project_row(data: Any, where: Where) -> Row:
    """Normalize a TrainingProjectV1 (or its `{id, name}` summary)."""
    data = obj(data, where)
    return {
        "id": key_text(data, "id", where),
        "name": text(data, "name", where),
        "team_name": text(data, "team_name", where),
        "created_at": timestamp(data, "created_at", where),
        "updated_at": timestamp(data, "updated_at", where),
        "extra": _extra(data, _PROJECT_KEYS, where),
    }


def instance_type_row(data: Any, where: Where) -> Row:
    """Normalize an InstanceTypeV1."""
    data = obj(data, where)
    return {
        "id": key_text(data, "id", where),
        "name": text(data, "name", where),
        "memory_limit_mib": integer(data, "memory_limit_mib", where),
        "millicpu_limit": integer(data, "millicpu_limit", where),
        "gpu_count": integer(data, "gpu_count", where, bits=32),  # an INTEGER column
        "gpu_type": text(data, "gpu_type", where),
        "gpu_memory_limit_mib": integer(data, "gpu_memory_limit_mib", where),
        "extra": _extra(data, _INSTANCE_TYPE_KEYS, where),
    }


@dataclass
class JobRecord:
    """One job as the API described it: its row and the instance type it ran on."""

    row: Row
    instance_type: Row | None


def job_record(data: Any, where: Where) -> JobRecord:
    """Normalize a TrainingJobV1."""
    data = obj(data, where)
    job_id = key_text(data, "id", where)
    where = Where(where.project_id, job_id, where.path)
    project_id = text(data, "training_project_id", where)
    if project_id is None:
        summary = obj(_get(data, "training_project", where, required=True), where / "training_project")
        project_id = key_text(summary, "id", where / "training_project")
    if where.project_id is not None and project_id != where.project_id:
        # Archiving it would move the job to another project, or break the foreign key.
        raise (where / "training_project_id").fail(
            f"expected project {where.project_id!r}, got {project_id!r}"
        )
    raw_type = data.get("instance_type")
    instance_type = None if raw_type is None else instance_type_row(raw_type, where / "instance_type")
    user = data.get("user")
    extra = _extra(data, _JOB_KEYS, where) or {}
    if user is not None:
        user = obj(user, where / "user")
        if set(user) - {"email"}:
            extra["user"] = document(dict(user), where / "user")
    availability = text(data, "availability_model", where)
    row: Row = {
        "id": job_id,
        "training_project_id": project_id,
        "instance_type_id": instance_type["id"] if instance_type else None,
        "name": text(data, "name", where),
        "current_status": text(data, "current_status", where, required=True),
        "error_message": text(data, "error_message", where),
        "checkpoint_sync_status": text(data, "checkpoint_sync_status", where),
        "priority": integer(data, "priority", where),
        "user_email": text(user, "email", where / "user") if user else None,
        # The spec says lowercase, a fixture sends "DEDICATED": store one spelling.
        "availability_model": availability.lower() if availability else None,
        "created_at": timestamp(data, "created_at", where, required=True),
        "updated_at": timestamp(data, "updated_at", where, required=True),
        "extra": extra or None,
    }
    return JobRecord(row=row, instance_type=instance_type)


def canonical_json(value: Any) -> str:
    """Serialize JSON so that equal documents give equal text, whatever their key order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def lora_config_row(config: Mapping[str, Any]) -> Row:
    """Normalize a LoRA adapter config; keep the whole document, extract the known keys."""

    def typed(key: str, kinds: tuple[type, ...]) -> Any:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return None  # kept as received in `config`; the column stays null
        return value

    def real(key: str) -> float | None:
        value = typed(key, (int, float))
        try:
            return None if value is None else float(value)  # a DOUBLE column: huge ints do not fit
        except OverflowError:
            return None

    r = typed("r", (int,))
    return {
        "config_sha256": hashlib.sha256(canonical_json(config).encode()).hexdigest(),
        "r": r if r is None or abs(r) <= INT64_MAX else None,
        "lora_alpha": real("lora_alpha"),
        "lora_dropout": real("lora_dropout"),
        "target_modules": config.get("target_modules"),
        "task_type": typed("task_type", (str,)),
        "peft_type": typed("peft_type", (str,)),
        "base_model_name_or_path": typed("base_model_name_or_path", (str,)),
        "config": dict(config),
    }


@dataclass
class CheckpointListing:
    """A job's checkpoint listing, normalized: the job, its checkpoints and their LoRA configs."""

    project_id: str
    job: JobRecord
    checkpoints: list[Row]  # `lora_config_sha256` stands where the config id will go
    lora_configs: dict[str, Row] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)

    @property
    def all_complete(self) -> bool:
        """Whether every checkpoint finished uploading (`COMPLETE` and `COMPLETED` alike).

        Never while the job says its uploader is still `SYNCING`: it may list more checkpoints
        yet, even when those listed so far (or none at all) are complete. Servers that omit a
        checkpoint's `sync_status` give no per-checkpoint signal: such a checkpoint counts as complete.
        """
        if self.job.row["checkpoint_sync_status"] == "SYNCING":
            return False
        return all(
            row["sync_status"] in COMPLETE_SYNC_STATUSES or row["sync_status"] is None
            for row in self.checkpoints
        )


def checkpoint_listing(payload: Any, project_id: str, job_id: str) -> CheckpointListing:
    """Normalize a GetTrainingJobCheckpointsResponseV1 for one job.

    When a checkpoint id repeats within one response, the last entry wins: the API lists
    checkpoints oldest first, so the last is the newest word on it.
    """
    where = Where(project_id, job_id)
    payload = obj(payload, where)
    job = job_record(_get(payload, "training_job", where, required=True), where / "training_job")
    if job.row["id"] != job_id:
        raise (where / "training_job.id").fail(f"expected job {job_id!r}, got {job.row['id']!r}")
    listed = items(_get(payload, "checkpoints", where, required=True), where / "checkpoints")
    by_id: dict[str, Row] = {}
    configs: dict[str, Row] = {}
    duplicates: list[str] = []
    for index, entry in enumerate(listed):
        row, config = checkpoint_row(entry, where / "checkpoints" / index, job_id)
        if row["checkpoint_id"] in by_id:
            duplicates.append(row["checkpoint_id"])
            del by_id[row["checkpoint_id"]]  # re-insert so the survivor keeps the later position
        by_id[row["checkpoint_id"]] = row
        if config is not None:
            configs[config["config_sha256"]] = config
    return CheckpointListing(project_id, job, list(by_id.values()), configs, duplicates)


@dataclass
class ProjectListing:
    """The organisation's project listing, normalized.

    An entry that breaks the contract is `rejected` (that project fails) and the rest stand; a
    listing with rejected entries is incomplete, so nothing may be inferred from what it lacks.
    """

    projects: list[Row]
    rejected: list[MalformedResponse] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.rejected


def project_listing(payload: Any) -> ProjectListing:
    """Normalize a GET /v1/training_projects response."""
    where = Where(path="GET /v1/training_projects")
    payload = obj(payload, where)
    listed = items(_get(payload, "training_projects", where, required=True), where / "training_projects")
    projects: dict[str, Row] = {}
    rejected: list[MalformedResponse] = []
    for index, entry in enumerate(listed):
        try:
            row = project_row(entry, Where(path=f"training_projects[{index}]"))
        except MalformedResponse as exc:
            rejected.append(exc)
            continue
        projects.pop(row["id"], None)  # listed twice: the later entry wins, as for checkpoints
        projects[row["id"]] = row
    return ProjectListing(list(projects.values()), rejected)


@dataclass
class JobListing:
    """A project's job listing, normalized: the project, its jobs, and the entries rejected.

    A listing with rejected entries is incomplete: nothing may be inferred from what it lacks.
    """

    project: Row
    jobs: list[JobRecord]
    rejected: list[MalformedResponse] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.rejected


def job_listing(payload: Any, project_id: str) -> JobListing:
    """Normalize a GET /v1/training_projects/{id}/jobs response for one project.

    The project itself must be the one asked for: archiving another would overwrite it and mark
    its jobs deleted. A job listed twice counts once, the later entry winning.
    """
    where = Where(project_id)
    payload = obj(payload, where)
    project_where = where / "training_project"
    project = project_row(_get(payload, "training_project", where, required=True), project_where)
    if project["id"] != project_id:
        raise (project_where / "id").fail(f"expected project {project_id!r}, got {project['id']!r}")
    listed = items(_get(payload, "training_jobs", where, required=True), where / "training_jobs")
    jobs: dict[str, JobRecord] = {}
    rejected: list[MalformedResponse] = []
    for index, entry in enumerate(listed):
        try:
            record = job_record(entry, where / "training_jobs" / index)
        except MalformedResponse as exc:
            rejected.append(exc)
            continue
        jobs.pop(record.row["id"], None)
        jobs[record.row["id"]] = record
    return JobListing(project, list(jobs.values()), rejected)


def project_of_job(payload: Any, job_id: str) -> str | None:
    """The project of `job_id` in a POST /v1/training_jobs/search response; None when not found."""
    where = Where(job_id=job_id, path="POST /v1/training_jobs/search")
    payload = obj(payload, where)
    found = items(_get(payload, "training_jobs", where, required=True), where / "training_jobs")
    for index, entry in enumerate(found):
        record = job_record(entry, Where(job_id=job_id, path=f"training_jobs[{index}]"))
        if record.row["id"] == job_id:
            return str(record.row["training_project_id"])
    return None


def checkpoint_row(data: Any, where: Where, job_id: str) -> tuple[Row, Row | None]:
    """Normalize one TrainingJobCheckpointV1 and its LoRA config, if any."""
    data = obj(data, where)
    listed_job = text(data, "training_job_id", where)
    if listed_job is not None and listed_job != job_id:
        raise (where / "training_job_id").fail(f"expected job {job_id!r}, got {listed_job!r}")
    raw_config = data.get("lora_adapter_config")
    config = None
    if raw_config is not None:
        config_where = where / "lora_adapter_config"
        config = lora_config_row(document(obj(raw_config, config_where), config_where))
    checkpoint_type = text(data, "checkpoint_type", where, required=True)
    row: Row = {
        "training_job_id": job_id,
        # The schema allows any string here, the empty one included.
        "checkpoint_id": text(data, "checkpoint_id", where, required=True, nullable=False),
        "created_at": timestamp(data, "created_at", where, required=True),
        # truss lowercases before comparing; store one spelling of the known ones, others as received.
        "checkpoint_type": checkpoint_type.lower()
        if checkpoint_type and checkpoint_type.lower() in {"lora", "full", "whisper"}
        else checkpoint_type,
        "base_model": text(data, "base_model", where),
        "lora_config_sha256": config["config_sha256"] if config else None,
        "size_bytes": integer(data, "size_bytes", where, required=True),
        "sync_status": text(data, "sync_status", where),
        "extra": _extra(data, _CHECKPOINT_KEYS, where),
    }
    return row, config
