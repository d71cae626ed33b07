"""The contract of each API object: how every field is read, and what the API promises about it.

Each API object has a contract here (`TRAINING_PROJECT`, `TRAINING_JOB`, ...): one `Key` per
field it knows, with how the value is read and whether the API promises it (`required`: the key
is always sent; `nullable`: its value may be null). The row builders in `archiver.normalize` and
the known-key sets derive from those tables, and a test holds them against the OpenAPI schemas
of every era of the spec.

Strict where the API makes promises: a required field that is missing or null, an integer that
is not exact, or a value no column can hold fails by name, so an archive never trades a good
value for a bad one. Lenient where the API is open: optional keys may be missing, unknown
statuses and types are kept as received, and every field without a column lands in `extra`.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import re
import reprlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

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
# A timestamp `_cleaned_instant` would leave as it is: no space, no lower case, no leap second, and
# no fraction but of exactly six digits.
_PLAIN_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d(?:\.\d{6})?(?:Z|[+-]\d\d:\d\d)?", re.ASCII)


class Where:
    """Where in a response a value sits, for error messages: project, job and a JSON path."""

    def __init__(self, project_id: str | None = None, job_id: str | None = None, path: str = "") -> None:
        self.project_id = project_id
        self.job_id = job_id
        self.path = path

    def __truediv__(self, key: str | int) -> Where:
        step = f"[{key}]" if isinstance(key, int) else (f".{key}" if self.path else key)
        return Where(self.project_id, self.job_id, self.path + step)

    def at(self, path: str) -> Where:
        """The same response, at another path."""
        return Where(self.project_id, self.job_id, path)

    def fail(self, problem: str) -> MalformedResponse:
        field_ = f"field {self.path!r}: " if self.path else ""
        return MalformedResponse(
            f"{field_}{problem}",
            field=self.path or None,
            problem=problem,
            project_id=self.project_id,
            job_id=self.job_id,
        )


class _Misread(Exception):
    """A read at `UNPLACED` found a problem: read again, placed, to name where it is."""


class _Unplaced(Where):
    """Nowhere: what `ApiObject.read` reads at first. Nearly every value is as promised, and a path
    built for each one (a million for 100,000 checkpoints) would only ever serve an error message."""

    def __truediv__(self, key: str | int) -> Where:
        return self

    def at(self, path: str) -> Where:
        return self

    def fail(self, problem: str) -> MalformedResponse:
        raise _Misread


UNPLACED = _Unplaced()


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


def unstorable(value: str) -> str | None:
    """Say why a string cannot go into both databases, or None when it can.

    (`ApiObject._read` takes ASCII without NUL as storable without asking here: a new rule goes there too.)"""
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
    _stored_text(value, where)
    return value


def _stored_text(value: Any, where: Where, **options: Any) -> str:
    """A JSON value as text (`json.dumps` with `options`), if both databases can store it exactly."""
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, **options)
    except ValueError:
        raise where.fail("contains NaN or Infinity, which JSON cannot carry") from None
    except RecursionError:
        raise _too_deep(where) from None
    # Only a document with that many brackets can nest that deep: most are never walked.
    if encoded.count("[") + encoded.count("{") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise _too_deep(where)
    # json.dumps escapes NUL as \u0000 even with ensure_ascii=False; a literal backslash-u0000
    # in a string also matches, so confirm by walking before refusing.
    if "\\u0000" in encoded or unstorable(encoded):
        for path, text_ in _strings(value, where.path):
            if problem := unstorable(text_):
                raise where.at(path).fail(problem)
    return encoded


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
    bound = 1 << (bits - 1)  # a shift, not a power: this runs for every integer read
    if not -bound <= exact < bound:
        raise ValueError(f"integer {exact} does not fit in {bits} bits")
    return exact


# Readers: each takes a value that is present and not null, and returns what the row stores.


def _string(value: Any, where: Where) -> str:
    if not isinstance(value, str):
        raise where.fail(f"expected a string, got {_describe(value)}")
    if problem := unstorable(value):
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


def _node_count(value: Any, where: Where) -> int:
    count = _int32(value, where)
    if count < 1:
        raise where.fail(f"a job runs on at least 1 node, got {count}")
    return count


def _instant(value: Any, where: Where) -> datetime:
    return parse_timestamp(_string(value, where), where)


def _checkpoint_type(value: Any, where: Where) -> str:
    # truss lowercases before comparing; store one spelling of the known ones, others as received.
    kind = _string(value, where)
    return kind.lower() if kind.lower() in _KNOWN_CHECKPOINT_TYPES else kind


def _unread_object(value: Any, where: Where) -> Mapping[str, Any]:
    return obj(value, where)


def _lora_config(value: Any, where: Where) -> Row:
    # A job's checkpoints share a few configs: each distinct one is serialized and hashed once.
    # The row is shared by the checkpoints that carry it; nothing downstream changes it.
    key = _as_key(value)
    if key is not None and (known := _LORA_ROWS.get(key)) is not None:
        return known
    config = obj(value, where)
    canonical = _stored_text(config, where, **_CANONICAL)  # may refuse it: then it is not remembered
    row = lora_config_row(config, canonical)
    if key is not None and max(len(key), len(canonical)) <= _LORA_TEXT_HELD:  # a large one is not held on to
        if len(_LORA_ROWS) >= _LORA_ROWS_HELD:
            _LORA_ROWS.clear()
        _LORA_ROWS[key] = row
    return row


_LORA_ROWS: dict[bytes, Row] = {}  # LoRA config rows by `_as_key`, shared by the fetch threads
_LORA_ROWS_HELD = 1_024
_LORA_TEXT_HELD = 4_096  # characters of a remembered config's key and canonical text, at most


def _as_key(value: Any) -> bytes | None:
    """A key equal for two parsed JSON values exactly when they are the same document, keys in the same order.

    It is the value's `marshal` serialization, format 2 (without back-references, which would depend
    on how many references each object happens to have): every value `json` parses (dicts, lists,
    strings, numbers, booleans and null) is written with its type, in order, and reads back equal.
    So `1`, `1.0` and `true`, or `0.0` and `-0.0`, equal in Python, differ in it as in JSON. Made in
    one call into C, twice as fast as the value's `repr` (0.8 µs against 1.7 µs for a config of
    twelve keys), where a walk of the value in Python took a quarter of a listing's normalizing.
    None for a value nested too deeply to write out.
    """
    try:
        return marshal.dumps(value, 2)
    except (ValueError, RecursionError):  # nested past marshal's depth limit
        return None


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
        """Read every known key by its contract, and the unknown ones into `extra`.

        Read first at no place: what breaks the contract is then read again where it is, to say so.
        """
        if where is UNPLACED:  # within an object being read at no place
            return self._read(data, where)
        try:
            return self._read(data, UNPLACED)
        except _Misread:
            return self._read(data, where)

    def _read(self, data: Any, where: Where) -> Row:
        data = obj(data, where)
        if where is not UNPLACED:
            row = {key.name: key.take(data, where) for key in self.keys}
        else:  # as nearly every object is read: a plain string is taken as it is, without a call
            row = {}
            for key in self.keys:
                value = data.get(key.name)
                if value is None:  # absent or null: as the key allows
                    row[key.name] = key.take(data, UNPLACED)
                elif key.read is _string and type(value) is str and value.isascii() and "\x00" not in value:
                    row[key.name] = value
                else:
                    row[key.name] = key.read(value, UNPLACED)
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
        # Era C on: optional, old jobs lack it (null as received). Stored as sent ("DEDICATED" from
        # baseten-cli's mocks too): an archive keeps the API's spelling, readers lower() it.
        Key("availability_model", _string, required=False, nullable=True),
        # Era D on (2026-08-07): optional, default 1, minimum 1; absent on jobs from before. Null is
        # read as not sent (the nodes then come from the instance type), never as a count.
        Key("node_count", _node_count, required=False, nullable=True),
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
        # Required by the spec, but baseten-cli's own mocks leave it out: the job is known anyway,
        # it is the one whose listing the entry came from (marked `training_job_id_inferred`).
        Key("training_job_id", _string, required=False, nullable=False),
        Key("created_at", _instant, required=True, nullable=False),
        Key("checkpoint_type", _checkpoint_type, required=True, nullable=False),
        # Required by the spec, but the older docs and truss's fixtures leave both out of full
        # checkpoints (baseten-api.md §2.2): absent reads as null.
        Key("base_model", _string, required=False, nullable=True),
        Key("lora_adapter_config", _lora_config, required=False, nullable=True),
        Key("size_bytes", _int64, required=True, nullable=False),
        # Optional in the spec, and missing from the older docs page.
        Key("sync_status", _string, required=False, nullable=True),
        # Not in the spec: Loops checkpoints carry it (`sampler` or `trainer`) and truss reads it.
        Key("target", _string, required=False, nullable=True),
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
    # Plain, as the API sends them, a timestamp needs no cleaning.
    cleaned = value if _PLAIN_INSTANT.fullmatch(value) else _cleaned_instant(value)
    try:
        parsed = datetime.fromisoformat(cleaned)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise where.fail(f"expected an ISO 8601 timestamp in years 1-9999 UTC, got {_short(value)}") from None


def _cleaned_instant(value: str) -> str:
    """An ISO 8601 timestamp as `datetime.fromisoformat` reads it: upper case, six fractional digits, no leap second."""
    cleaned = value.strip().upper()
    # RFC 3339 allows second 60 for a leap second, which datetime cannot hold. Its last
    # microsecond of the minute before is within a second of the truth and still sorts after
    # :59 and before the next minute, as the leap second did.
    cleaned = _LEAP_SECOND.sub(r"\1:59.999999", cleaned)
    return _FRACTION.sub(lambda m: "." + m.group(1).ljust(6, "0"), cleaned)


def _extra(data: Mapping[str, Any], known: frozenset[str], where: Where) -> dict[str, Any] | None:
    if data.keys() <= known:  # as nearly every object is: no key unknown
        return None
    extra: dict[str, Any] = document({k: v for k, v in data.items() if k not in known}, where)
    return extra


_CANONICAL: dict[str, Any] = {"sort_keys": True, "separators": (",", ":")}


def canonical_json(value: Any) -> str:
    """Serialize JSON so that equal documents give equal text, whatever their key order."""
    return json.dumps(value, ensure_ascii=False, **_CANONICAL)


def lora_config_row(config: Mapping[str, Any], canonical: str | None = None) -> Row:
    """Normalize a LoRA adapter config; keep the whole document, extract the known keys.

    `canonical` is its `canonical_json`, when the caller has it already.
    """

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

    canonical = canonical_json(config) if canonical is None else canonical
    return {
        "config_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "r": exact("r"),
        "lora_alpha": real("lora_alpha"),
        "lora_dropout": real("lora_dropout"),
        "target_modules": config.get("target_modules"),
        "task_type": typed("task_type", (str,)),
        "peft_type": typed("peft_type", (str,)),
        "base_model_name_or_path": typed("base_model_name_or_path", (str,)),
        "config": dict(config),
    }
