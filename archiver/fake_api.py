"""A deterministic fake of the Baseten training management API, served over loopback HTTP.

The organisation is generated from an `OrgSpec` seed. Projects and jobs live in memory, but a job's
checkpoints are regenerated on demand from (seed, job id) and stored only once a test mutates them,
so a million-checkpoint benchmark organisation costs tens of megabytes, not gigabytes.

`FakeBaseten.handle` is the whole protocol (auth, rate limit, faults, routing) without sockets;
`serve` and `serve_forever` put it behind a `ThreadingHTTPServer`.
"""

from __future__ import annotations

import copy
import hmac
import json
import math
import random
import socket
import struct
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

DEFAULT_API_KEY = "fake-baseten-key"

TERMINAL_STATUSES: frozenset[str] = frozenset(
    {
        "TRAINING_JOB_COMPLETED",
        "TRAINING_JOB_FAILED",
        "TRAINING_JOB_STOPPED",
        "TRAINING_JOB_DEPLOY_FAILED",
    }
)
FAULT_KINDS: frozenset[str] = frozenset(
    {"429", "429-no-header", "500", "502", "503", "reset", "delay", "truncate"}
)
BROKEN_KINDS: frozenset[str] = frozenset(
    {"not-json", "truncated", "missing-field", "wrong-type", "list-for-object"}
)
RATE_LIMIT_MESSAGE = "Rate limit exceeded. Please try again later."

_SECOND = 1_000_000  # timestamps are held as integer microseconds so ordering is exact
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_EPOCH_US = int(datetime.fromisoformat("2026-01-05T00:00:00+00:00").timestamp()) * _SECOND
_MUTATION_STEP_US = 60 * _SECOND

# Timestamp spellings: real servers vary, and the archiver must compare instants, not strings.
_PLAIN, _FRACTIONAL, _OFFSET = 0, 1, 2

_TERMINAL_WEIGHTS = {
    "TRAINING_JOB_COMPLETED": 70,
    "TRAINING_JOB_FAILED": 14,
    "TRAINING_JOB_STOPPED": 12,
    "TRAINING_JOB_DEPLOY_FAILED": 4,
}
_ACTIVE_WEIGHTS = {
    "TRAINING_JOB_RUNNING": 50,
    "TRAINING_JOB_PENDING": 14,
    "TRAINING_JOB_QUEUED": 12,
    "TRAINING_JOB_DEPLOYING": 10,
    "TRAINING_JOB_CREATED": 6,
    # baseten-cli's tests use this made-up status: the archiver must accept statuses it has never seen.
    "TRAINING_JOB_HIBERNATING": 2,
}

_INSTANCE_TYPES: tuple[dict[str, Any], ...] = (
    {
        "id": "H100:8x208x1800",
        "name": "8xH100",
        "memory_limit_mib": 1843200,
        "millicpu_limit": 208000,
        "gpu_count": 8,
        "gpu_type": "H100",
        "gpu_memory_limit_mib": 81920,
    },
    {
        "id": "H100:2x52x468",
        "name": "2xH100",
        "memory_limit_mib": 479232,
        "millicpu_limit": 52000,
        "gpu_count": 2,
        "gpu_type": "H100",
        "gpu_memory_limit_mib": 81920,
    },
    {
        "id": "H200:8x208x2000",
        "name": "8xH200",
        "memory_limit_mib": 2048000,
        "millicpu_limit": 208000,
        "gpu_count": 8,
        "gpu_type": "H200",
        "gpu_memory_limit_mib": 143360,
    },
    {
        "id": "A10G:1x8x32",
        "name": "1xA10G",
        "memory_limit_mib": 32768,
        "millicpu_limit": 8000,
        "gpu_count": 1,
        "gpu_type": "A10G",
        "gpu_memory_limit_mib": 24576,
    },
    {
        "id": "4x16",
        "name": "4x16",
        "memory_limit_mib": 16384,
        "millicpu_limit": 4000,
        "gpu_count": 0,
        "gpu_type": None,
        "gpu_memory_limit_mib": None,
    },
)
_INSTANCE_WEIGHTS = (30, 30, 12, 18, 10)

_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
_LORA_CONFIGS: tuple[dict[str, Any], ...] = (
    {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "Qwen/Qwen3-8B",
        "r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "bias": "none",
        "target_modules": [*_ATTENTION, "gate_proj", "up_proj", "down_proj"],
        "modules_to_save": None,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    },
    {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "bias": "none",
        "target_modules": ["q_proj", "v_proj"],
        "modules_to_save": None,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    },
    {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "Qwen/Qwen3-32B",
        "r": 64,
        "lora_alpha": 128,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": r".*\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj",
        "modules_to_save": ["lm_head"],
        "inference_mode": True,
        "use_rslora": True,
        "use_dora": False,
    },
    {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "openai/gpt-oss-20b",
        "r": 32,
        "lora_alpha": 64,
        "lora_dropout": 0.0,
        "bias": "lora_only",
        "target_modules": _ATTENTION,
        "modules_to_save": None,
        "inference_mode": False,
        "use_rslora": False,
        "use_dora": True,
    },
)
_WHISPER_BASE_MODEL = "openai/whisper-large-v3"

_PROJECT_NAMES = (
    "qwen3-8b-support-sft",
    "llama-3.1-8b-dpo",
    "gpt-oss-20b-tools",
    "whisper-large-v3-ft",
    "scratch",
    "qwen3-32b-reasoning",
    "summarize-tickets",
    "eval-sweeps",
)
_TEAM_NAMES = ("ml-platform", "research", "applied-ml")
_JOB_PREFIXES = ("sft", "dpo", "grpo", "lora", "ft")
_JOB_SUFFIXES = ("lr2e-4", "lr1e-5", "r16", "beta0.1", "v2", "ablation", "long-ctx")
_EMAILS = ("alice@example.com", "bob@example.com", "carol@example.com", "dan@example.com")
_FAILURES = (
    "Process exited with code 1",
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "NCCL watchdog timeout after 1800000 ms",
)
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_HTML_ERROR = b"<html><head><title>%d</title></head><body><h1>%d %s</h1></body></html>\n"
_CACHE_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class OrgSpec:
    """The shape of a generated organisation; the same spec always yields the same org."""

    seed: int = 0
    projects: int = 3
    jobs_per_project: int = 4
    checkpoints_per_job: int = 5
    active_fraction: float = 0.25  # share of jobs in a non-terminal status
    syncing_fraction: float = 0.1  # share of an active job's checkpoints still SYNCING

    def __post_init__(self) -> None:
        if min(self.projects, self.jobs_per_project, self.checkpoints_per_job) < 0:
            raise ValueError("OrgSpec counts must not be negative")
        if not (0.0 <= self.active_fraction <= 1.0 and 0.0 <= self.syncing_fraction <= 1.0):
            raise ValueError("OrgSpec fractions must lie between 0 and 1")


@dataclass(frozen=True)
class Faults:
    """Transient faults drawn per request from a seeded RNG, plus jobs whose checkpoints are always broken."""

    seed: int = 0
    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "429-no-header", "500", "502", "503", "reset", "delay", "truncate")
    delay_s: float = 2.0
    broken_jobs: Mapping[str, str] = field(default_factory=dict)
    retry_after_s: int = 1  # what a faulted 429 tells the client to wait; 0 keeps test suites fast

    def __post_init__(self) -> None:
        if unknown := set(self.kinds) - FAULT_KINDS:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {sorted(FAULT_KINDS)}")
        if unknown := set(self.broken_jobs.values()) - BROKEN_KINDS:
            raise ValueError(
                f"unknown broken-job kinds {sorted(unknown)}; choose from {sorted(BROKEN_KINDS)}"
            )
        if self.rate > 0 and not self.kinds:
            raise ValueError("a positive fault rate needs at least one fault kind")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it; status 0 means the connection was reset without an answer."""

    method: str
    path: str
    status: int
    started: float
    finished: float


@dataclass(frozen=True)
class Response:
    """An HTTP answer; `fault` tells the socket layer to "reset" or "truncate" instead of replying cleanly."""

    status: int
    headers: dict[str, str]
    body: bytes
    fault: str | None = None

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything needed to regenerate a job's checkpoints without storing them."""

    count: int
    stride: int
    first_us: int
    gap_us: int
    kind: str
    lora: int
    size: int
    done_word: str | None  # "COMPLETE" or "COMPLETED"; None for old-style jobs that omit sync_status


@dataclass(slots=True)
class _Job:
    data: dict[str, Any]
    project_id: str
    created_us: int
    plan: _Plan
    checkpoints: list[dict[str, Any]] | None = None  # set once a mutation makes the list diverge


@dataclass(slots=True)
class _Project:
    data: dict[str, Any]  # TrainingProjectV1 without latest_job
    summary: dict[str, str]
    created_us: int
    updated_us: int
    job_ids: list[str] = field(default_factory=list)


def _reorderings(config: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """Return the same config with several key orders, as different writers of adapter_config.json produce."""
    keys = list(config)
    half = len(keys) // 2
    orders = (keys, keys[::-1], sorted(keys), keys[half:] + keys[:half])
    return tuple({key: config[key] for key in order} for order in orders)


_LORA_VARIANTS = tuple(_reorderings(config) for config in _LORA_CONFIGS)


def _iso(us: int, style: int = _PLAIN) -> str:
    """Format microseconds since the Unix epoch as ISO 8601 in UTC."""
    seconds, micros = divmod(us, _SECOND)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if style == _FRACTIONAL:
        return f"{base}.{micros:06d}Z"
    if style == _OFFSET:
        return f"{base}+00:00"
    return f"{base}Z"


def _parse_iso(text: str) -> int:
    """Parse an ISO 8601 timestamp into microseconds since the Unix epoch."""
    moment = datetime.fromisoformat(text)
    return round(moment.timestamp() * _SECOND)


def _stamp(rng: random.Random, whole_us: int) -> tuple[int, str]:
    """Pick a spelling for a whole-second instant, adding a fraction only where it will be shown."""
    roll = rng.random()
    if roll < 0.08:
        us = whole_us + rng.randrange(1, _SECOND)
        return us, _iso(us, _FRACTIONAL)
    if roll < 0.12:
        return whole_us, _iso(whole_us, _OFFSET)
    return whole_us, _iso(whole_us)


def _weighted(rng: random.Random, weights: Mapping[str, int]) -> str:
    """Choose a key of `weights` with probability proportional to its value."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _json_response(status: int, payload: Any) -> Response:
    """Encode `payload` as a JSON response."""
    return _bytes_response(status, json.dumps(payload, separators=(",", ":")).encode())


def _bytes_response(status: int, body: bytes, content_type: str = _JSON) -> Response:
    """Wrap an encoded body with the headers every answer carries."""
    return Response(status, {"Content-Type": content_type, "Content-Length": str(len(body))}, body)


def _message(status: int, message: str) -> Response:
    """Answer with the `{"message": ...}` error shape the Baseten API uses for 4xx."""
    return _json_response(status, {"message": message})


def _html_error(status: int) -> Response:
    """Answer the way a load balancer does: an HTML page, not JSON."""
    phrase = HTTPStatus(status).phrase.encode()
    return _bytes_response(status, _HTML_ERROR % (status, status, phrase), _HTML)


def _too_many_requests(retry_after: int, *, header: bool) -> Response:
    """Answer 429 in the documented shape, with or without a Retry-After header."""
    response = _json_response(429, {"error": RATE_LIMIT_MESSAGE, "retry_after": retry_after})
    if header:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _presented_key(headers: Mapping[str, str]) -> str | None:
    """Return the key from an `Api-Key` or `Bearer` Authorization header, if there is one."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in ("api-key", "bearer") or not token.strip():
        return None
    return token.strip()


class FakeBaseten:
    """An in-memory Baseten organisation that answers the training management API."""

    def __init__(
        self,
        spec: OrgSpec = OrgSpec(),
        *,
        api_key: str = DEFAULT_API_KEY,
        latency_ms: float = 0.0,
        rate_limit_rps: float | None = None,
        retry_after_header: bool = True,
        faults: Faults | None = None,
    ) -> None:
        if rate_limit_rps is not None and rate_limit_rps <= 0:
            raise ValueError("rate_limit_rps must be positive or None")
        self.spec = spec
        self._api_key = api_key.encode()
        self._latency_s = latency_ms / 1000.0
        self._rate_limit = rate_limit_rps
        self._retry_after_header = retry_after_header
        self._faults = faults or Faults()
        self._fault_rng = random.Random(self._faults.seed)

        # State lock: guards the org, the clock and the response cache.
        self._lock = threading.RLock()
        self._projects: dict[str, _Project] = {}
        self._jobs: dict[str, _Job] = {}
        self._ids: set[str] = set()
        self._clock_us = _EPOCH_US
        self._added_projects = 0
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_bytes = 0

        # Metrics lock: guards request records, the in-flight gauge, rate-limit windows and the fault RNG.
        self._metrics_lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._windows: dict[bytes, deque[float]] = {}

        self._generate()

    # ----------------------------------------------------------------------------------------------
    # generation

    def _generate(self) -> None:
        """Build the projects and jobs of the spec; checkpoints stay implicit in each job's plan."""
        spec = self.spec
        rng = random.Random(spec.seed)
        total_jobs = spec.projects * spec.jobs_per_project
        # An exact active count, not a per-job coin flip, so tests can rely on the fraction.
        active = set(rng.sample(range(total_jobs), round(total_jobs * spec.active_fraction)))
        created_us = _EPOCH_US
        for p in range(spec.projects):
            created_us += rng.randrange(1, 48) * _HOUR
            project = self._new_project(rng, self._generated_name(p), created_us)
            job_us = created_us
            for j in range(spec.jobs_per_project):
                job_us += rng.randrange(10, 24 * 60) * _MINUTE
                index = p * spec.jobs_per_project + j
                status = _weighted(rng, _ACTIVE_WEIGHTS if index in active else _TERMINAL_WEIGHTS)
                self._new_job(rng, project, job_us, status, self._checkpoint_count(rng, status))

    def _checkpoint_count(self, rng: random.Random, status: str) -> int:
        """Decide up front how many checkpoints a job has, so totals never need generation."""
        wanted = self.spec.checkpoints_per_job
        if status == "TRAINING_JOB_DEPLOY_FAILED":
            return 0  # it never ran
        if status == "TRAINING_JOB_FAILED":
            return rng.randint(wanted // 2, wanted)
        return wanted

    def _new_id(self, rng: random.Random) -> str:
        """Draw a fresh 7-character id, unique across projects and jobs."""
        while True:
            candidate = "".join(rng.choices(_ID_ALPHABET, k=7))
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    @staticmethod
    def _generated_name(index: int) -> str:
        """Name the index-th generated project; every fifth repeats an earlier name, as Baseten allows."""
        if index % 5 == 2:
            index -= 2
        name = _PROJECT_NAMES[index % len(_PROJECT_NAMES)]
        return name if index < len(_PROJECT_NAMES) else f"{name}-{index // len(_PROJECT_NAMES)}"

    def _new_project(self, rng: random.Random, name: str, created_us: int) -> _Project:
        """Create and register an empty project."""
        project_id = self._new_id(rng)
        created_us, created_text = _stamp(rng, created_us)
        data: dict[str, Any] = {
            "id": project_id,
            "name": name,
            "created_at": created_text,
            "updated_at": created_text,
            "team_name": None if rng.random() < 0.25 else rng.choice(_TEAM_NAMES),
        }
        if rng.random() < 0.15:
            data["is_archived"] = False  # a field newer than the archiver
        project = _Project(data, {"id": project_id, "name": name}, created_us, created_us)
        self._projects[project_id] = project
        self._clock_us = max(self._clock_us, created_us)
        return project

    def _new_job(
        self, rng: random.Random, project: _Project, created_us: int, status: str, count: int
    ) -> _Job:
        """Create and register a job with `count` checkpoints planned after `created_us`."""
        job_id = self._new_id(rng)
        created_us, created_text = _stamp(rng, created_us)
        gap_us = rng.randrange(5, 90) * _MINUTE
        updated_us = created_us - created_us % _SECOND + gap_us * (count + 1)
        updated_us, updated_text = _stamp(rng, updated_us)
        kind = rng.choices(("lora", "full", "whisper"), weights=(80, 17, 3))[0]
        lora = rng.randrange(len(_LORA_CONFIGS))
        legacy = status in TERMINAL_STATUSES and rng.random() < 0.05
        plan = _Plan(
            count=count,
            stride=rng.choice((50, 100, 250, 500, 1000)),
            first_us=created_us - created_us % _SECOND,
            gap_us=gap_us,
            kind=kind,
            lora=lora,
            size=self._size(rng, kind),
            done_word=None if legacy else rng.choice(("COMPLETE", "COMPLETE", "COMPLETED")),
        )
        error = None
        if status == "TRAINING_JOB_FAILED":
            error = rng.choice(_FAILURES)
        elif status == "TRAINING_JOB_DEPLOY_FAILED":
            error = "Failed to pull image: manifest unknown"
        sync = None
        if count:
            sync = "SYNCING" if status not in TERMINAL_STATUSES else (None if legacy else "COMPLETED")
        user = None if rng.random() < 0.15 else {"email": rng.choice(_EMAILS)}
        data: dict[str, Any] = {
            "id": job_id,
            "name": None
            if rng.random() < 0.2
            else f"{rng.choice(_JOB_PREFIXES)}-{rng.choice(_JOB_SUFFIXES)}",
            "created_at": created_text,
            "updated_at": updated_text,
            "current_status": status,
            "error_message": error,
            "instance_type": rng.choices(_INSTANCE_TYPES, weights=_INSTANCE_WEIGHTS)[0],
            "training_project_id": project.data["id"],
            "training_project": project.summary,
            "checkpoint_sync_status": sync,
            "priority": rng.choice((0, 0, 0, 0, 1, 5, 10)),
            "availability_model": "spot" if rng.random() < 0.2 else "dedicated",
            "user": user,
        }
        if rng.random() < 0.08:
            data["node_count"] = 2  # only newer servers send it
        job = _Job(data, project.data["id"], created_us, plan)
        self._jobs[job_id] = job
        project.job_ids.append(job_id)
        self._bump_project(project, updated_us)
        self._clock_us = max(self._clock_us, updated_us)
        return job

    @staticmethod
    def _size(rng: random.Random, kind: str) -> int:
        """Draw a realistic checkpoint size in bytes for a checkpoint type."""
        exponent = {"lora": (7.0, 9.0), "full": (10.0, 11.0), "whisper": (9.3, 9.6)}[kind]
        return int(10 ** rng.uniform(*exponent))

    def _generated_checkpoints(self, job_id: str, job: _Job) -> list[dict[str, Any]]:
        """Regenerate a job's checkpoints from (seed, job id), oldest first."""
        plan = job.plan
        rng = random.Random(f"{self.spec.seed}:{job_id}")
        active = job.data["current_status"] not in TERMINAL_STATUSES
        fraction = self.spec.syncing_fraction
        return [self._checkpoint(rng, job_id, plan, i, active, fraction) for i in range(plan.count)]

    @staticmethod
    def _checkpoint(
        rng: random.Random, job_id: str, plan: _Plan, index: int, active: bool, syncing_fraction: float
    ) -> dict[str, Any]:
        """Build checkpoint number `index` of a plan; every call draws the same number of values."""
        # Jitter stays under half a gap, so created_at strictly increases with the step.
        whole_us = (
            plan.first_us + plan.gap_us * (index + 1) + rng.randrange(plan.gap_us // 2 // _SECOND) * _SECOND
        )
        _, created_text = _stamp(rng, whole_us)
        kind = "full" if plan.kind == "lora" and rng.random() < 0.03 else plan.kind
        syncing = rng.random() < syncing_fraction
        variant = rng.randrange(len(_LORA_VARIANTS[0]))
        extra = rng.random() < 0.02
        checkpoint: dict[str, Any] = {
            "checkpoint_id": f"checkpoint-{plan.stride * (index + 1)}",
            "training_job_id": job_id,
            "created_at": created_text,
            "checkpoint_type": kind,
            "base_model": None,
            "size_bytes": plan.size,
        }
        if kind != plan.kind:
            checkpoint["size_bytes"] = plan.size * 40  # a merged full model next to its adapters
        if plan.done_word is not None:
            checkpoint["sync_status"] = "SYNCING" if active and syncing else plan.done_word
        if kind == "lora":
            config = _LORA_VARIANTS[plan.lora][variant]
            checkpoint["base_model"] = config["base_model_name_or_path"]
            checkpoint["lora_adapter_config"] = config
        else:
            checkpoint["base_model"] = _WHISPER_BASE_MODEL if kind == "whisper" else None
            checkpoint["lora_adapter_config"] = None
        if extra:
            checkpoint["storage_region"] = "us-east-1"
        return checkpoint

    # ----------------------------------------------------------------------------------------------
    # reading state

    def _project_order(self) -> list[str]:
        """Return project ids oldest first."""
        return sorted(self._projects, key=lambda pid: (self._projects[pid].created_us, pid))

    def _job_order(self, job_ids: list[str]) -> list[str]:
        """Return `job_ids` oldest first."""
        return sorted(job_ids, key=lambda jid: (self._jobs[jid].created_us, jid))

    def _get_project(self, project_id: str) -> _Project:
        """Find a project or raise KeyError naming it."""
        try:
            return self._projects[project_id]
        except KeyError:
            raise KeyError(f"no training project {project_id!r}") from None

    def _get_job(self, job_id: str) -> _Job:
        """Find a job or raise KeyError naming it."""
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no training job {job_id!r}") from None

    def _project_payload(self, project: _Project) -> dict[str, Any]:
        """Return TrainingProjectV1 sharing internal objects; callers serialise or deep-copy it under the lock."""
        latest = max(project.job_ids, key=lambda jid: (self._jobs[jid].created_us, jid), default=None)
        return {**project.data, "latest_job": None if latest is None else self._jobs[latest].data}

    def _checkpoint_list(self, job_id: str, job: _Job) -> list[dict[str, Any]]:
        """Return the stored list of a mutated job, else a freshly generated one."""
        if job.checkpoints is not None:
            return job.checkpoints
        return self._generated_checkpoints(job_id, job)

    def project_ids(self) -> list[str]:
        """Return every project id, oldest first."""
        with self._lock:
            return self._project_order()

    def job_ids(self, project_id: str | None = None) -> list[str]:
        """Return the job ids of one project, or of the whole org, oldest first."""
        with self._lock:
            ids = list(self._jobs) if project_id is None else self._get_project(project_id).job_ids
            return self._job_order(ids)

    def project(self, project_id: str) -> dict[str, Any]:
        """Return a project as TrainingProjectV1, with its latest job."""
        with self._lock:
            return copy.deepcopy(self._project_payload(self._get_project(project_id)))

    def job(self, job_id: str) -> dict[str, Any]:
        """Return a job as TrainingJobV1."""
        with self._lock:
            return copy.deepcopy(self._get_job(job_id).data)

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """Return a job's checkpoints as TrainingJobCheckpointV1 dicts, oldest first."""
        with self._lock:
            return copy.deepcopy(self._checkpoint_list(job_id, self._get_job(job_id)))

    def total_checkpoints(self) -> int:
        """Return how many checkpoints the whole org has right now."""
        with self._lock:
            return sum(
                job.plan.count if job.checkpoints is None else len(job.checkpoints)
                for job in self._jobs.values()
            )

    # ----------------------------------------------------------------------------------------------
    # mutations

    def _tick(self) -> int:
        """Advance the org's clock past every timestamp it holds, so mutations stay deterministic."""
        self._clock_us += _MUTATION_STEP_US
        return self._clock_us

    def _changed(self) -> None:
        """Drop cached response bodies after any mutation."""
        self._cache.clear()
        self._cache_bytes = 0

    def _bump_project(self, project: _Project, us: int) -> None:
        """Move a project's updated_at forward to `us`, never back."""
        if us > project.updated_us:
            project.updated_us = us
            project.data["updated_at"] = _iso(us)

    def _touch(self, job: _Job, us: int | None = None) -> None:
        """Move a job's and its project's updated_at forward after a change."""
        us = self._tick() if us is None else us
        job.data["updated_at"] = _iso(us)
        self._bump_project(self._projects[job.project_id], us)
        self._changed()

    def _materialise(self, job_id: str, job: _Job) -> list[dict[str, Any]]:
        """Store a job's checkpoint list so it can diverge from the generated one."""
        if job.checkpoints is None:
            job.checkpoints = copy.deepcopy(self._generated_checkpoints(job_id, job))
        return job.checkpoints

    def add_checkpoint(self, job_id: str, **overrides: Any) -> dict[str, Any]:
        """Append the job's next checkpoint (created now), apply `overrides`, and return it."""
        with self._lock:
            job = self._get_job(job_id)
            checkpoints = self._materialise(job_id, job)
            steps = [int(c["checkpoint_id"].rpartition("-")[2]) for c in checkpoints if _is_step(c)]
            step = max(steps, default=0) + job.plan.stride
            rng = random.Random(f"{self.spec.seed}:{job_id}:add:{step}")
            active = job.data["current_status"] not in TERMINAL_STATUSES
            checkpoint = self._checkpoint(rng, job_id, job.plan, 0, active, self.spec.syncing_fraction)
            now = self._tick()
            checkpoint["checkpoint_id"] = f"checkpoint-{step}"
            checkpoint["created_at"] = _iso(now)
            checkpoint = copy.deepcopy({**checkpoint, **overrides})
            checkpoints.append(checkpoint)
            self._touch(job, now)
            return copy.deepcopy(checkpoint)

    def delete_checkpoint(self, job_id: str, checkpoint_id: str) -> None:
        """Remove one checkpoint from a job."""
        with self._lock:
            job = self._get_job(job_id)
            checkpoints = self._materialise(job_id, job)
            checkpoints.remove(_find_checkpoint(checkpoints, job_id, checkpoint_id))
            self._touch(job)

    def update_checkpoint(self, job_id: str, checkpoint_id: str, **fields: Any) -> None:
        """Change fields of one checkpoint, e.g. sync_status="COMPLETE"."""
        with self._lock:
            job = self._get_job(job_id)
            checkpoint = _find_checkpoint(self._materialise(job_id, job), job_id, checkpoint_id)
            checkpoint.update(copy.deepcopy(fields))
            self._touch(job)

    def set_job(self, job_id: str, **fields: Any) -> None:
        """Change fields of a job; updated_at moves forward unless given.

        A job that becomes terminal finishes syncing: its SYNCING checkpoints turn COMPLETE.
        """
        if frozen := {"id", "training_project_id", "training_project"} & set(fields):
            raise ValueError(f"set_job cannot change {sorted(frozen)}")
        with self._lock:
            job = self._get_job(job_id)
            status = fields.get("current_status", job.data["current_status"])
            if status != job.data["current_status"]:
                # Freeze the list under the old status so regeneration cannot reshuffle it.
                checkpoints = self._materialise(job_id, job)
                if status in TERMINAL_STATUSES:
                    _finish_syncing(job, checkpoints)
            job.data.update(copy.deepcopy(fields))
            if "created_at" in fields:
                job.created_us = _parse_iso(fields["created_at"])
            if "updated_at" in fields:
                given = _parse_iso(fields["updated_at"])
                self._clock_us = max(self._clock_us, given)
                self._bump_project(self._projects[job.project_id], given)
                self._changed()
            else:
                self._touch(job)

    def delete_job(self, job_id: str) -> None:
        """Remove a job and its checkpoints."""
        with self._lock:
            job = self._get_job(job_id)
            del self._jobs[job_id]
            project = self._projects[job.project_id]
            project.job_ids.remove(job_id)
            self._bump_project(project, self._tick())
            self._changed()

    def delete_project(self, project_id: str) -> None:
        """Remove a project and all of its jobs."""
        with self._lock:
            project = self._get_project(project_id)
            for job_id in project.job_ids:
                del self._jobs[job_id]
            del self._projects[project_id]
            self._changed()

    def add_project(self, jobs: int = 1, checkpoints_per_job: int = 3) -> str:
        """Add a project created now whose jobs all completed with exactly `checkpoints_per_job` each."""
        with self._lock:
            self._added_projects += 1
            rng = random.Random(f"{self.spec.seed}:project:{self._added_projects}")
            name = f"{rng.choice(_PROJECT_NAMES)}-new-{self._added_projects}"
            project = self._new_project(rng, name, self._tick())
            job_us = project.created_us - project.created_us % _SECOND
            for _ in range(jobs):
                job_us += rng.randrange(10, 120) * _MINUTE
                self._new_job(rng, project, job_us, "TRAINING_JOB_COMPLETED", checkpoints_per_job)
            self._changed()
            return cast(str, project.data["id"])

    # ----------------------------------------------------------------------------------------------
    # metrics

    @property
    def requests(self) -> list[RequestRecord]:
        """Return every request handled since the last reset, in finishing order."""
        with self._metrics_lock:
            return list(self._records)

    def request_count(self, path_prefix: str = "") -> int:
        """Count handled requests whose path starts with `path_prefix`."""
        with self._metrics_lock:
            return sum(record.path.startswith(path_prefix) for record in self._records)

    @property
    def max_in_flight(self) -> int:
        """Return the most requests that were being handled at the same moment."""
        with self._metrics_lock:
            return self._max_in_flight

    def max_requests_in_window(self, window_s: float = 1.0) -> int:
        """Return the most requests whose start falls inside any window of `window_s` seconds."""
        starts = sorted(record.started for record in self.requests)
        best, first = 0, 0
        for last, start in enumerate(starts):
            while start - starts[first] >= window_s:
                first += 1
            best = max(best, last - first + 1)
        return best

    def reset_metrics(self) -> None:
        """Forget recorded requests and peaks; rate-limit windows and the fault RNG carry on."""
        with self._metrics_lock:
            self._records.clear()
            self._max_in_flight = self._in_flight

    # ----------------------------------------------------------------------------------------------
    # the protocol

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one HTTP request, recording it in the metrics."""
        started = time.monotonic()
        with self._metrics_lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        status = 500  # what gets recorded if answering raises
        try:
            response = self._respond(method.upper(), path, headers, body, started)
            status = 0 if response.fault == "reset" else response.status
            return response
        finally:
            record = RequestRecord(method.upper(), path, status, started, time.monotonic())
            with self._metrics_lock:
                self._in_flight -= 1
                self._records.append(record)

    def _respond(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, arrived: float
    ) -> Response:
        """Apply latency, auth, the rate limit and faults, then route."""
        if self._latency_s:
            time.sleep(self._latency_s)
        key = _presented_key(headers)
        if key is None or not hmac.compare_digest(key.encode(), self._api_key):
            return _message(401, "Invalid API key")
        retry_after = self._over_rate_limit(key.encode(), arrived)
        if retry_after is not None:
            return _too_many_requests(retry_after, header=self._retry_after_header)
        fault, html = self._draw_fault()
        if fault == "delay":
            time.sleep(self._faults.delay_s)
        elif fault == "429":
            return _too_many_requests(self._faults.retry_after_s, header=True)
        elif fault == "429-no-header":
            return _too_many_requests(self._faults.retry_after_s, header=False)
        elif fault in ("500", "502", "503"):
            status = int(fault)
            return _html_error(status) if html else _message(status, HTTPStatus(status).phrase)
        elif fault == "reset":
            return Response(0, {}, b"", fault="reset")
        response = self._route(method, path, body)
        return replace(response, fault="truncate") if fault == "truncate" else response

    def _over_rate_limit(self, key: bytes, now: float) -> int | None:
        """Admit a request into the key's sliding one-second window, or return seconds to wait."""
        if self._rate_limit is None:
            return None
        with self._metrics_lock:
            window = self._windows.setdefault(key, deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= self._rate_limit:
                return max(1, math.ceil(window[0] + 1.0 - now))
            window.append(now)
            return None

    def _draw_fault(self) -> tuple[str | None, bool]:
        """Draw whether this request fails, how, and whether a 5xx comes as HTML."""
        faults = self._faults
        if faults.rate <= 0:
            return None, False
        with self._metrics_lock:
            if self._fault_rng.random() >= faults.rate:
                return None, False
            return self._fault_rng.choice(faults.kinds), self._fault_rng.random() < 0.5

    def _route(self, method: str, path: str, body: bytes) -> Response:
        """Dispatch a request to the endpoint its path names."""
        parts = [part for part in urlsplit(path).path.split("/") if part]
        action: Callable[[], Response]
        match parts:
            case ["v1", "training_projects"]:
                allowed, action = "GET", self._list_projects
            case ["v1", "training_projects", pid]:
                allowed, action = "GET", partial(self._show_project, pid)
            case ["v1", "training_projects", pid, "jobs"]:
                allowed, action = "GET", partial(self._list_jobs, pid)
            case ["v1", "training_projects", pid, "jobs", jid]:
                allowed, action = "GET", partial(self._show_job, pid, jid)
            case ["v1", "training_projects", pid, "jobs", jid, "checkpoints"]:
                allowed, action = "GET", partial(self._list_checkpoints, pid, jid)
            case ["v1", "training_jobs", "search"]:
                allowed, action = "POST", partial(self._search, body)
            case _:
                return _message(404, f"No route for {urlsplit(path).path}")
        if method != allowed:
            response = _message(405, f"Method {method} not allowed")
            response.headers["Allow"] = allowed
            return response
        return action()

    def _list_projects(self) -> Response:
        """Answer GET /v1/training_projects."""
        with self._lock:
            projects = [self._project_payload(self._projects[pid]) for pid in self._project_order()]
            return _json_response(200, {"training_projects": projects})

    def _show_project(self, project_id: str) -> Response:
        """Answer GET /v1/training_projects/{pid}."""
        with self._lock:
            project = self._projects.get(project_id)
            if project is None:
                return _message(404, f"Training project {project_id} not found")
            return _json_response(200, {"training_project": self._project_payload(project)})

    def _list_jobs(self, project_id: str) -> Response:
        """Answer GET /v1/training_projects/{pid}/jobs."""
        with self._lock:
            project = self._projects.get(project_id)
            if project is None:
                return _message(404, f"Training project {project_id} not found")
            jobs = [self._jobs[jid].data for jid in self._job_order(project.job_ids)]
            payload = {"training_project": self._project_payload(project), "training_jobs": jobs}
            return _json_response(200, payload)

    def _job_in(self, project_id: str, job_id: str) -> tuple[_Project | None, _Job | None]:
        """Look a job up under its project; a job asked for under another project does not exist."""
        project = self._projects.get(project_id)
        job = self._jobs.get(job_id)
        if job is not None and job.project_id != project_id:
            job = None
        return project, job

    def _show_job(self, project_id: str, job_id: str) -> Response:
        """Answer GET /v1/training_projects/{pid}/jobs/{jid}."""
        with self._lock:
            project, job = self._job_in(project_id, job_id)
            if project is None:
                return _message(404, f"Training project {project_id} not found")
            if job is None:
                return _message(404, f"Training job {job_id} not found")
            payload = {"training_project": self._project_payload(project), "training_job": job.data}
            return _json_response(200, payload)

    def _list_checkpoints(self, project_id: str, job_id: str) -> Response:
        """Answer GET /v1/training_projects/{pid}/jobs/{jid}/checkpoints, from the cache when possible."""
        with self._lock:
            project, job = self._job_in(project_id, job_id)
            if project is None:
                return _message(404, f"Training project {project_id} not found")
            if job is None:
                return _message(404, f"Training job {job_id} not found")
            broken = self._faults.broken_jobs.get(job_id)
            if broken is not None:
                return self._broken_checkpoints(job_id, job, broken)
            cache_key = f"{project_id}/{job_id}"
            if (cached := self._cache.get(cache_key)) is not None:
                self._cache.move_to_end(cache_key)
                return _bytes_response(200, cached)
            payload = {"training_job": job.data, "checkpoints": self._checkpoint_list(job_id, job)}
            response = _json_response(200, payload)
            self._remember(cache_key, response.body)
            return response

    def _remember(self, key: str, body: bytes) -> None:
        """Keep a response body in the bounded LRU cache, which any mutation clears."""
        self._cache[key] = body
        self._cache_bytes += len(body)
        while self._cache_bytes > _CACHE_MAX_BYTES:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= len(evicted)

    def _broken_checkpoints(self, job_id: str, job: _Job, kind: str) -> Response:
        """Answer 200 with a checkpoints body that is broken in the named way."""
        if kind == "not-json":
            return _bytes_response(200, _HTML_ERROR % (200, 502, b"Bad Gateway"), _HTML)
        checkpoints = copy.deepcopy(self._checkpoint_list(job_id, job))
        if not checkpoints:
            # A broken field needs a checkpoint to live in.
            rng = random.Random(f"{self.spec.seed}:{job_id}:broken")
            checkpoints = [self._checkpoint(rng, job_id, job.plan, 0, False, 0.0)]
        payload: dict[str, Any] = {"training_job": job.data, "checkpoints": checkpoints}
        if kind == "missing-field":
            del checkpoints[0]["checkpoint_id"]
        elif kind == "wrong-type":
            checkpoints[0]["size_bytes"] = "big"
        elif kind == "list-for-object":
            payload["training_job"] = [job.data]
        body = _json_response(200, payload).body
        if kind == "truncated":
            body = body[: len(body) // 2]
        return _bytes_response(200, body)

    def _search(self, body: bytes) -> Response:
        """Answer POST /v1/training_jobs/search."""
        try:
            query = json.loads(body) if body.strip() else {}
        except ValueError:
            return _message(400, "Request body is not valid JSON")
        if not isinstance(query, dict):
            return _message(400, "Request body must be a JSON object")
        statuses = query.get("statuses")
        if statuses is not None and not (
            isinstance(statuses, list) and all(isinstance(s, str) for s in statuses)
        ):
            return _message(400, "statuses must be a list of strings")
        descending = _descending(query.get("order_by"))
        if descending is None:
            return _message(400, "order_by supports only created_at, with order asc or desc")
        project_id, job_id = query.get("project_id"), query.get("job_id")
        with self._lock:
            jobs = [
                job
                for jid, job in self._jobs.items()
                if (project_id is None or job.project_id == project_id)
                and (job_id is None or jid == job_id)
                and (statuses is None or job.data["current_status"] in statuses)
            ]
            jobs.sort(key=lambda job: (job.created_us, job.data["id"]), reverse=descending)
            return _json_response(200, {"training_jobs": [job.data for job in jobs]})


def _descending(order_by: Any) -> bool | None:
    """Read the search sort direction; None means the order_by value is unsupported."""
    if order_by is None or order_by == []:
        return True
    if not isinstance(order_by, list) or not all(isinstance(o, dict) for o in order_by):
        return None
    first = order_by[0]
    order = first.get("order", "desc")
    if first.get("field", "created_at") != "created_at" or order not in ("asc", "desc"):
        return None
    return bool(order == "desc")


def _is_step(checkpoint: dict[str, Any]) -> bool:
    """Tell whether a checkpoint id has the `checkpoint-<step>` form."""
    prefix, _, step = str(checkpoint.get("checkpoint_id", "")).rpartition("-")
    return prefix == "checkpoint" and step.isdigit()


def _find_checkpoint(checkpoints: list[dict[str, Any]], job_id: str, checkpoint_id: str) -> dict[str, Any]:
    """Find a checkpoint by id or raise KeyError naming it."""
    for checkpoint in checkpoints:
        if checkpoint.get("checkpoint_id") == checkpoint_id:
            return checkpoint
    raise KeyError(f"no checkpoint {checkpoint_id!r} in training job {job_id!r}")


def _finish_syncing(job: _Job, checkpoints: list[dict[str, Any]]) -> None:
    """Mark every SYNCING checkpoint of a job that just ended as synced."""
    for checkpoint in checkpoints:
        if checkpoint.get("sync_status") == "SYNCING":
            checkpoint["sync_status"] = job.plan.done_word or "COMPLETE"
    if job.data.get("checkpoint_sync_status") == "SYNCING":
        job.data["checkpoint_sync_status"] = "COMPLETED"


# --------------------------------------------------------------------------------------------------
# HTTP server


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so it can close them on shutdown."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeBaseten) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    @property
    def url(self) -> str:
        """Return the base URL clients should use."""
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on idle keep-alive clients so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer are routine here (faults, timeouts); only real bugs deserve a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Hand each request to `FakeBaseten.handle` and write its answer in a single send."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Answers go out in one write, so Nagle would only add delayed-ACK stalls.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the fake's request records are the log."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _dispatch(self) -> None:
        """Read one request, let the fake answer it, and send the answer."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._write(_message(400, "Invalid Content-Length"))
            return
        body = self.rfile.read(length) if length > 0 else b""
        fake = cast(_Server, self.server).fake
        try:
            response = fake.handle(self.command, self.path, dict(self.headers.items()), body)
        except Exception:
            traceback.print_exc()
            response = _message(500, "The fake Baseten API failed; see its stderr")
        if response.fault == "reset":
            self._reset()
        else:
            self._write(response)

    def _write(self, response: Response) -> None:
        """Send status line, headers and body in one write."""
        body = response.body
        if response.fault == "truncate":
            # Promise the whole body, deliver half, hang up: what a dying proxy looks like.
            body = body[: len(body) // 2]
            self.close_connection = True
        lines = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}"]
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def _reset(self) -> None:
        """Drop the connection with a TCP RST and no answer."""
        self.close_connection = True
        with suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


@contextmanager
def serve(fake: FakeBaseten, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `fake` from a background thread and yield its base URL; stop it on exit."""
    server = _Server((host, port), fake)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()


def serve_forever(
    fake: FakeBaseten,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `fake` in the foreground until interrupted, calling `ready(url)` once listening."""
    server = _Server((host, port), fake)
    try:
        if ready is not None:
            ready(server.url)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.close_connections()
        server.server_close()
