"""Turn Baseten API JSON into row dicts: validation and lenient parsing, no I/O.

Each API object has a contract below (`TRAINING_PROJECT`, `TRAINING_JOB`, ...): one `Key` per
field it knows, with how the value is read and whether the API promises it (`required`: the key
is always sent; `nullable`: its value may be null). The row builders and the known-key sets
derive from those tables, and a test holds them against the vendored OpenAPI schemas.

Strict where the API makes promises: a required field that is missing or null, an integer that
is not exact, or a value no column can hold fails by name, so an archive never trades a good
value for a bad one. Lenient where the API is open: optional keys may be missing, unknown
statuses and types are kept as received, and every field without a column lands in `extra`.

A listing endpoint has no paging; a response that says there is more (`next_page_token`,
`has_more`, a `total_count` above what it lists, a `Link: <...>; rel="next"` header: every marker
`archiver.paging` knows) keeps its entries but is not `complete`.
"""

from __future__ import annotations

import hashlib
import json
import re
import reprlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from archiver import paging
from archiver.errors import MalformedResponse
from archiver.redaction import QUOTED_CHARS, shorten

Row = dict[str, Any]
Reader = Callable[[Any, "Where"], Any]

COMPLETE_SYNC_STATUSES = frozenset({"COMPLETE", "COMPLETED"})
TERMINAL_JOB_STATUSES = frozenset(
    {"TRAINING_JOB_COMPLETED", "TRAINING_JOB_FAILED", "TRAINING_JOB_STOPPED", "TRAINING_JOB_DEPLOY_FAILED"}
)
# PostgreSQL's btree index entries hold at most 2704 bytes, and a checkpoint's key holds two
# identifiers (its job's and its own): each may have at most this many bytes of UTF-8.
MAX_KEY_BYTES = 1024
# JSON kept in a column (`extra`, LoRA configs) nests at most this deep. Deeper, the writes and
# reads that serialize it recurse past Python's limit, wherever the stack happens to be.
MAX_JSON_DEPTH = 256
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
# A JSON number written with a fraction or exponent arrives as a double. Below 2^53 a whole one is
# the integer its text named; from 2^53 on, neighbouring integers share one double
# (9007199254740993.0 parses as 2^53 itself), so no such float says which integer was meant.
_EXACT_FLOAT_BOUND = 2**53

_KNOWN_CHECKPOINT_TYPES = frozenset({"lora", "full", "whisper"})

_MISSING = object()
_FRACTION = re.compile(r"[.,](\d{1,6})\d*")
_LEAP_SECOND = re.compile(r"(\d\d:\d\d):60(?:[.,]\d+)?(?=[Z+-]|$)")


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


# Bounded in depth and breadth: an echoed value nested a thousand deep or ten megabytes long costs no more.
_QUOTING = reprlib.Repr()
_QUOTING.maxlevel = 3
_QUOTING.maxstring = _QUOTING.maxlong = _QUOTING.maxother = 4 * QUOTED_CHARS


def _short(value: Any) -> str:
    """A value taken from a response as an error message quotes it: its first characters, then "…"."""
    return shorten(_QUOTING.repr(value[: QUOTED_CHARS + 1] if isinstance(value, str) else value))


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {_short(value)}"


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
    except RecursionError:
        raise _too_deep(where) from None
    # Only a document with that many brackets can nest that deep: most are never walked.
    if encoded.count("[") + encoded.count("{") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise _too_deep(where)
    # json.dumps escapes NUL as \u0000 even with ensure_ascii=False; a literal backslash-u0000
    # in a string also matches, so confirm by walking before refusing.
    if "\\u0000" in encoded or _unstorable(encoded):
        for path, text_ in _strings(value, where.path):
            if problem := _unstorable(text_):
                raise Where(where.project_id, where.job_id, path).fail(problem)
    return value


def _too_deep(where: Where) -> MalformedResponse:
    return where.fail(
        f"nested more than {MAX_JSON_DEPTH} levels deep, deeper than the archive stores "
        "(every later write and read would have to recurse through it)"
    )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a JSON value nests arrays and objects more than `limit` levels deep (walked without recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, Mapping) else item if isinstance(item, list) else None
        if children is None:
            continue
        if level > limit:
            return True
        pending.extend((child, level + 1) for child in children)
    return False


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


def _as_integer(value: Any) -> int:
    """Return value as an int if it names one exactly; raise ValueError saying why not."""
    if isinstance(value, float) and value.is_integer():
        # JSON Schema counts 1.0 as an integer; a double only names one exactly below 2^53.
        if abs(value) >= _EXACT_FLOAT_BOUND:
            raise ValueError(f"not an exact integer: floats beyond 2^53 lose digits, got {_describe(value)}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_describe(value)}")
    return int(value)


def _exact_integer(value: Any, bits: int) -> int:
    """Return value as an int if it is exactly an integer of `bits` bits; raise ValueError saying why not."""
    exact = _as_integer(value)
    if not -(2 ** (bits - 1)) <= exact < 2 ** (bits - 1):
        raise ValueError(f"integer {exact} does not fit in {bits} bits")
    return exact


# Readers: each takes a value that is present and not null, and returns what the row stores.


def _string(value: Any, where: Where) -> str:
    if not isinstance(value, str):
        raise where.fail(f"expected a string, got {_describe(value)}")
    if problem := _unstorable(value):
        raise where.fail(problem)
    return value


def _key_text(value: Any, where: Where) -> str:
    text_ = _string(value, where)
    if len(text_) * 4 > MAX_KEY_BYTES and len(text_.encode()) > MAX_KEY_BYTES:
        raise where.fail(
            f"{len(text_.encode())} bytes long, more than the {MAX_KEY_BYTES} an archived identifier may have "
            f"(a database index cannot hold it): {_short(text_)}"
        )
    return text_


def _identifier(value: Any, where: Where) -> str:
    identifier = _key_text(value, where)
    if not identifier:
        raise where.fail("an identifier must not be empty")
    return identifier


def _int64(value: Any, where: Where) -> int:
    try:
        return _exact_integer(value, 64)
    except ValueError as exc:
        raise where.fail(str(exc)) from None


def _int32(value: Any, where: Where) -> int:
    try:
        return _exact_integer(value, 32)  # an INTEGER column
    except ValueError as exc:
        raise where.fail(str(exc)) from None


def _instant(value: Any, where: Where) -> datetime:
    return parse_timestamp(_string(value, where), where)


def _lowercase(value: Any, where: Where) -> str:
    # The spec says lowercase, a fixture sends "DEDICATED": store one spelling.
    return _string(value, where).lower()


def _checkpoint_type(value: Any, where: Where) -> str:
    # truss lowercases before comparing; store one spelling of the known ones, others as received.
    kind = _string(value, where)
    return kind.lower() if kind.lower() in _KNOWN_CHECKPOINT_TYPES else kind


def _unread_object(value: Any, where: Where) -> Mapping[str, Any]:
    return obj(value, where)


def _lora_config(value: Any, where: Where) -> Row:
    return lora_config_row(document(obj(value, where), where))


@dataclass(frozen=True)
class Key:
    """One key of an API object: how its value is read, and what the API promises about it."""

    name: str
    read: Reader
    required: bool  # the API always sends the key
    nullable: bool  # its value may be null

    def take(self, data: Mapping[str, Any], where: Where) -> Any:
        """Read this key of `data`; None where the contract allows it to be absent or null."""
        value = data.get(self.name, _MISSING)
        if value is _MISSING:
            if self.required:
                raise (where / self.name).fail("required field is missing")
            return None
        if value is None:
            if not self.nullable:
                raise (where / self.name).fail("must not be null")
            return None
        return self.read(value, where / self.name)


@dataclass(frozen=True)
class ApiObject:
    """The contract of one API object, named as its OpenAPI schema."""

    schema: str
    keys: tuple[Key, ...]

    @cached_property
    def known(self) -> frozenset[str]:
        """The keys with a reader; every other key of the object goes to `extra`."""
        return frozenset(key.name for key in self.keys)

    def key(self, name: str) -> Key:
        """Return the contract of one key."""
        return next(key for key in self.keys if key.name == name)

    def read(self, data: Any, where: Where) -> Row:
        """Read every known key by its contract, and the unknown ones into `extra`."""
        data = obj(data, where)
        row = {key.name: key.take(data, where) for key in self.keys}
        row["extra"] = _extra(data, self.known, where)
        return row


# The contracts. Where they depart from the OpenAPI schema, a comment says why; the test
# `test_the_contract_matches_the_openapi_schemas` lists the departures, so a spec change is noticed.

INSTANCE_TYPE = ApiObject(
    "InstanceTypeV1",
    (
        Key("id", _identifier, required=True, nullable=False),
        Key("name", _string, required=True, nullable=False),
        Key("memory_limit_mib", _int64, required=True, nullable=False),
        Key("millicpu_limit", _int64, required=True, nullable=False),
        Key("gpu_count", _int32, required=True, nullable=False),
        Key("gpu_type", _string, required=True, nullable=True),
        Key("gpu_memory_limit_mib", _int64, required=True, nullable=True),
    ),
)
PROJECT_SUMMARY = ApiObject(
    "TrainingProjectSummaryV1",
    (
        Key("id", _identifier, required=True, nullable=False),
        Key("name", _string, required=True, nullable=False),
    ),
)
USER = ApiObject("UserV1", (Key("email", _string, required=False, nullable=True),))
TRAINING_JOB = ApiObject(
    "TrainingJobV1",
    (
        Key("id", _identifier, required=True, nullable=False),
        Key("created_at", _instant, required=True, nullable=False),
        Key("updated_at", _instant, required=True, nullable=False),
        Key("current_status", _string, required=True, nullable=False),
        Key("instance_type", INSTANCE_TYPE.read, required=True, nullable=False),
        Key("training_project_id", _identifier, required=True, nullable=False),
        Key("training_project", PROJECT_SUMMARY.read, required=True, nullable=False),
        Key("name", _string, required=False, nullable=True),
        Key("error_message", _string, required=False, nullable=True),
        Key("checkpoint_sync_status", _string, required=False, nullable=True),
        # Not nullable in the spec, whose own description says "NULL is treated as 0": so null
        # is sent. It is stored as received (null), not turned into a 0 the API never said.
        Key("priority", _int64, required=False, nullable=True),
        # Not in the vendored spec; baseten-api.md §2.2: optional, old jobs lack it. Null as received.
        Key("availability_model", _lowercase, required=False, nullable=True),
        Key("user", USER.read, required=False, nullable=True),
    ),
)
TRAINING_PROJECT = ApiObject(
    # Not in the vendored file: baseten-api.md §2.2 gives it from the full management spec.
    "TrainingProjectV1",
    (
        Key("id", _identifier, required=True, nullable=False),
        Key("name", _string, required=True, nullable=False),
        Key("created_at", _instant, required=True, nullable=False),
        Key("updated_at", _instant, required=True, nullable=False),
        # Must be there, but its contents are not read here: the job is read, and checked, in its
        # project's job listing, and a broken latest job must not fail the whole project.
        Key("latest_job", _unread_object, required=True, nullable=True),
        Key("team_name", _string, required=False, nullable=True),
    ),
)
CHECKPOINT = ApiObject(
    "TrainingJobCheckpointV1",
    (
        # Any string, the empty one included: it is a directory name, unique within its job.
        Key("checkpoint_id", _key_text, required=True, nullable=False),
        Key("training_job_id", _string, required=True, nullable=False),
        Key("created_at", _instant, required=True, nullable=False),
        Key("checkpoint_type", _checkpoint_type, required=True, nullable=False),
        # Required by the spec, but the older docs and truss's fixtures leave both out of full
        # checkpoints (baseten-api.md §2.2): absent reads as null.
        Key("base_model", _string, required=False, nullable=True),
        Key("lora_adapter_config", _lora_config, required=False, nullable=True),
        Key("size_bytes", _int64, required=True, nullable=False),
        # Optional in the spec, and missing from the older docs page.
        Key("sync_status", _string, required=False, nullable=True),
    ),
)
CONTRACT = (TRAINING_PROJECT, PROJECT_SUMMARY, TRAINING_JOB, USER, INSTANCE_TYPE, CHECKPOINT)


def text(
    data: Mapping[str, Any], key: str, where: Where, *, required: bool = False, nullable: bool = True
) -> str | None:
    """Read a string field; a missing optional key is null."""
    value: str | None = Key(key, _string, required, nullable).take(data, where)
    return value


def integer(
    data: Mapping[str, Any], key: str, where: Where, *, required: bool = False, bits: int = 64
) -> int | None:
    """Read an exact integer field that must fit a column of `bits` bits (64, or 32 for INTEGER)."""
    value: int | None = Key(key, _int64 if bits == 64 else _int32, required, True).take(data, where)
    return value


def timestamp(data: Mapping[str, Any], key: str, where: Where, *, required: bool = False) -> datetime | None:
    """Read an ISO 8601 timestamp as an aware UTC datetime (naive input is taken as UTC)."""
    value: datetime | None = Key(key, _instant, required, True).take(data, where)
    return value


def parse_timestamp(value: str, where: Where) -> datetime:
    """Parse ISO 8601 with or without fraction or offset; keep microseconds, drop finer digits.

    RFC 3339 allows a lowercase `t` and `z`; an instant outside years 1-9999 once moved to UTC
    (e.g. `0001-01-01T00:00:00+01:00`) cannot be stored and fails like any malformed value.
    """
    cleaned = value.strip().upper()
    # RFC 3339 allows second 60 for a leap second, which datetime cannot hold. Its last
    # microsecond of the minute before is within a second of the truth and still sorts after
    # :59 and before the next minute, as the leap second did.
    cleaned = _LEAP_SECOND.sub(r"\1:59.999999", cleaned)
    cleaned = _FRACTION.sub(lambda m: "." + m.group(1).ljust(6, "0"), cleaned)
    try:
        parsed = datetime.fromisoformat(cleaned)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise where.fail(f"expected an ISO 8601 timestamp in years 1-9999 UTC, got {_short(value)}") from None


def _extra(data: Mapping[str, Any], known: frozenset[str], where: Where) -> dict[str, Any] | None:
    extra = {k: v for k, v in data.items() if k not in known}
    return document(extra, where) if extra else None


def project_row(data: Any, where: Where) -> Row:
    """Normalize a TrainingProjectV1."""
    row = TRAINING_PROJECT.read(data, where)
    del row["latest_job"]
    return row


def instance_type_row(data: Any, where: Where) -> Row:
    """Normalize an InstanceTypeV1."""
    return INSTANCE_TYPE.read(data, where)


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
    instance_type = row.pop("instance_type")
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

    def exact(key: str) -> int | None:
        try:
            return _exact_integer(config.get(key), 64)
        except ValueError:
            return None  # kept as received in `config`; the column stays null

    return {
        "config_sha256": hashlib.sha256(canonical_json(config).encode()).hexdigest(),
        "r": exact("r"),
        "lora_alpha": real("lora_alpha"),
        "lora_dropout": real("lora_dropout"),
        "target_modules": config.get("target_modules"),
        "task_type": typed("task_type", (str,)),
        "peft_type": typed("peft_type", (str,)),
        "base_model_name_or_path": typed("base_model_name_or_path", (str,)),
        "config": dict(config),
    }


def _more_than_listed(
    payload: Mapping[str, Any], listed: list[Any], where: Where, link: str = ""
) -> MalformedResponse | None:
    """Say what shows a response has more entries than it lists, or None when nothing does.

    Baseten's listings have no paging; if one starts to page, what a response lacks is not
    gone. The markers recognised, and what says there is no more, are `archiver.paging.MARKERS`.
    """
    said = paging.more_than_listed(payload, len(listed), link)
    if not said:
        return None
    return where.fail(
        f"the response says there is more ({', '.join(said)}); "
        "this endpoint has no paging the archiver knows, so the listing is incomplete"
    )


@dataclass
class CheckpointListing:
    """A job's checkpoint listing, normalized: the job, its checkpoints and their LoRA configs.

    `incomplete` says why the listing may lack checkpoints that exist (the response said there
    is more): nothing may then be inferred from what it lacks.
    """

    project_id: str
    job: JobRecord
    checkpoints: list[Row]  # `lora_config_sha256` stands where the config id will go
    lora_configs: dict[str, Row] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    incomplete: MalformedResponse | None = None

    @property
    def complete(self) -> bool:
        return self.incomplete is None

    @property
    def all_complete(self) -> bool:
        """Whether every checkpoint finished uploading (`COMPLETE` and `COMPLETED` alike).

        Never while the job says its uploader is still `SYNCING`: it may list more checkpoints
        yet, even when those listed so far (or none at all) are complete. Nor when the listing is
        incomplete. Servers that omit a checkpoint's `sync_status` give no per-checkpoint signal:
        such a checkpoint counts as complete.
        """
        if self.job.row["checkpoint_sync_status"] == "SYNCING" or not self.complete:
            return False
        return all(
            row["sync_status"] in COMPLETE_SYNC_STATUSES or row["sync_status"] is None
            for row in self.checkpoints
        )


def checkpoint_listing(payload: Any, project_id: str, job_id: str, link: str = "") -> CheckpointListing:
    """Normalize a GetTrainingJobCheckpointsResponseV1 for one job.

    When a checkpoint id repeats within one response, the last entry wins: the API lists
    checkpoints oldest first, so the last is the newest word on it.
    """
    where = Where(project_id, job_id)
    payload = obj(payload, where)
    job = job_record(_required(payload, "training_job", where), where / "training_job")
    if job.row["id"] != job_id:
        raise (where / "training_job.id").fail(f"expected job {job_id!r}, got {_short(job.row['id'])}")
    listed = items(_required(payload, "checkpoints", where), where / "checkpoints")
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
    incomplete = _more_than_listed(payload, listed, where, link)
    return CheckpointListing(project_id, job, list(by_id.values()), configs, duplicates, incomplete)


def _required(payload: Mapping[str, Any], key: str, where: Where) -> Any:
    if key not in payload:
        raise (where / key).fail("required field is missing")
    return payload[key]


@dataclass
class ProjectListing:
    """The organisation's project listing, normalized.

    An entry that breaks the contract is `rejected` (that project fails) and the rest stand. A
    response that says there is more is `incomplete`. Either way the listing is not complete, so
    nothing may be inferred from what it lacks.
    """

    projects: list[Row]
    rejected: list[MalformedResponse] = field(default_factory=list)
    incomplete: MalformedResponse | None = None

    @property
    def complete(self) -> bool:
        return not self.rejected and self.incomplete is None


def project_listing(payload: Any, link: str = "") -> ProjectListing:
    """Normalize a GET /v1/training_projects response."""
    where = Where(path="GET /v1/training_projects")
    payload = obj(payload, where)
    listed = items(_required(payload, "training_projects", where), where / "training_projects")
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
    return ProjectListing(list(projects.values()), rejected, _more_than_listed(payload, listed, where, link))


@dataclass
class JobListing:
    """A project's job listing, normalized: the project, its jobs, and the entries rejected.

    A listing with rejected entries, or `incomplete` because the response says there is more,
    is not complete: nothing may be inferred from what it lacks.
    """

    project: Row
    jobs: list[JobRecord]
    rejected: list[MalformedResponse] = field(default_factory=list)
    incomplete: MalformedResponse | None = None

    @property
    def complete(self) -> bool:
        return not self.rejected and self.incomplete is None


def job_listing(payload: Any, project_id: str, link: str = "") -> JobListing:
    """Normalize a GET /v1/training_projects/{id}/jobs response for one project.

    The project itself must be the one asked for: archiving another would overwrite it and mark
    its jobs deleted. A job listed twice counts once, the later entry winning.
    """
    where = Where(project_id)
    payload = obj(payload, where)
    project_where = where / "training_project"
    project = project_row(_required(payload, "training_project", where), project_where)
    if project["id"] != project_id:
        raise (project_where / "id").fail(f"expected project {project_id!r}, got {_short(project['id'])}")
    listed = items(_required(payload, "training_jobs", where), where / "training_jobs")
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
    return JobListing(project, list(jobs.values()), rejected, _more_than_listed(payload, listed, where, link))


def project_of_job(payload: Any, job_id: str, link: str = "") -> str | None:
    """The project of `job_id` in a POST /v1/training_jobs/search response; None when not found.

    A response that says there is more answers only when it lists the job: its absence proves nothing.
    """
    where = Where(job_id=job_id, path="POST /v1/training_jobs/search")
    payload = obj(payload, where)
    found = items(_required(payload, "training_jobs", where), where / "training_jobs")
    for index, entry in enumerate(found):
        record = job_record(entry, Where(job_id=job_id, path=f"training_jobs[{index}]"))
        if record.row["id"] == job_id:
            return str(record.row["training_project_id"])
    if incomplete := _more_than_listed(payload, found, where, link):
        raise incomplete
    return None


def checkpoint_row(data: Any, where: Where, job_id: str) -> tuple[Row, Row | None]:
    """Normalize one TrainingJobCheckpointV1 and its LoRA config, if any."""
    row = CHECKPOINT.read(data, where)
    if row["training_job_id"] != job_id:
        raise (where / "training_job_id").fail(
            f"expected job {job_id!r}, got {_short(row['training_job_id'])}"
        )
    config = row.pop("lora_adapter_config")
    row["lora_config_sha256"] = config["config_sha256"] if config else None
    return row, config
