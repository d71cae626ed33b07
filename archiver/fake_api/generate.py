"""Generate an organisation from a seed: the same `OrgSpec` always yields the same projects and jobs.

A job's checkpoints are not stored: its `Plan` holds the few numbers that regenerate them from
(seed, job id) on demand, so a million-checkpoint organisation costs tens of megabytes, not gigabytes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SECOND = 1_000_000  # timestamps are held as integer microseconds so ordering is exact
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
EPOCH_US = int(datetime.fromisoformat("2026-01-05T00:00:00+00:00").timestamp()) * SECOND

TERMINAL_STATUSES: frozenset[str] = frozenset(
    {
        "TRAINING_JOB_COMPLETED",
        "TRAINING_JOB_FAILED",
        "TRAINING_JOB_STOPPED",
        "TRAINING_JOB_DEPLOY_FAILED",
    }
)

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

_INSTANCE_TYPES: tuple[dict[str, Any], ...] = tuple(
    {
        "id": id_,
        "name": name,
        "memory_limit_mib": memory_mib,
        "millicpu_limit": millicpu,
        "gpu_count": gpus,
        "gpu_type": gpu,
        "gpu_memory_limit_mib": gpu_memory_mib,
    }
    for id_, name, memory_mib, millicpu, gpus, gpu, gpu_memory_mib in (
        ("H100:8x208x1800", "8xH100", 1843200, 208000, 8, "H100", 81920),
        ("H100:2x52x468", "2xH100", 479232, 52000, 2, "H100", 81920),
        ("H200:8x208x2000", "8xH200", 2048000, 208000, 8, "H200", 143360),
        ("A10G:1x8x32", "1xA10G", 32768, 8000, 1, "A10G", 24576),
        ("4x16", "4x16", 16384, 4000, 0, None, None),  # CPU only
    )
)
_INSTANCE_WEIGHTS = (30, 30, 12, 18, 10)

_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _lora(
    base: str, r: int, alpha: int, dropout: float, targets: list[str] | str, **unusual: Any
) -> dict[str, Any]:
    """Build an adapter_config.json as peft writes it; `unusual` replaces usual values in their place."""
    usual = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "bias": "none",
        "target_modules": targets,
        "modules_to_save": None,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
    return {**usual, **unusual}


_LORA_CONFIGS: tuple[dict[str, Any], ...] = (
    _lora("Qwen/Qwen3-8B", 16, 32, 0.05, [*_ATTENTION, "gate_proj", "up_proj", "down_proj"]),
    _lora("meta-llama/Llama-3.1-8B-Instruct", 8, 16, 0.1, ["q_proj", "v_proj"]),
    _lora(
        "Qwen/Qwen3-32B",
        64,
        128,
        0.0,
        r".*\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj",
        modules_to_save=["lm_head"],
        use_rslora=True,
    ),
    _lora(
        "openai/gpt-oss-20b", 32, 64, 0.0, _ATTENTION, bias="lora_only", inference_mode=False, use_dora=True
    ),
)
_WHISPER_BASE_MODEL = "openai/whisper-large-v3"

PROJECT_NAMES = (
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


@dataclass(frozen=True)
class OrgSpec:
    """The shape of a generated organisation; the same spec always yields the same org."""

    seed: int = 0
    projects: int = 3
    jobs_per_project: int = 4
    checkpoints_per_job: int = 5
    active_fraction: float = 0.25  # share of jobs in a non-terminal status
    syncing_fraction: float = 0.1  # share of an active job's checkpoints still SYNCING
    spec_era: str = "D"  # which era of the published spec the jobs are shaped by (see SPEC_ERAS)

    def __post_init__(self) -> None:
        if self.spec_era not in SPEC_ERAS:
            raise ValueError(f"unknown spec era {self.spec_era!r}: choose one of {', '.join(SPEC_ERAS)}")
        if min(self.projects, self.jobs_per_project, self.checkpoints_per_job) < 0:
            raise ValueError("OrgSpec counts must not be negative")
        if not (0.0 <= self.active_fraction <= 1.0 and 0.0 <= self.syncing_fraction <= 1.0):
            raise ValueError("OrgSpec fractions must lie between 0 and 1")


@dataclass(frozen=True, slots=True)
class Plan:
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
class Job:
    """A job as TrainingJobV1 plus what orders it and regenerates its checkpoints."""

    data: dict[str, Any]
    project_id: str
    created_us: int
    plan: Plan
    checkpoints: list[dict[str, Any]] | None = None  # set once a mutation makes the list diverge


@dataclass(slots=True)
class Project:
    """A project as TrainingProjectV1 (without latest_job) and the summary its jobs embed."""

    data: dict[str, Any]
    summary: dict[str, str]  # shared by every job's `training_project`, so a rename reaches them all
    created_us: int
    updated_us: int
    job_ids: list[str] = field(default_factory=list)


# The eras of the published spec (tests/data/training-schemas-by-era.json) and the TrainingJobV1 fields
# each lacks: A (2026-03-29) the first; B (2026-04-21) adds `priority`; C (2026-06-25) adds
# `availability_model`; D (2026-08-07) adds `node_count`, sent on every job (default 1).
SPEC_ERAS: dict[str, tuple[str, ...]] = {
    "A": ("priority", "availability_model", "node_count"),
    "B": ("availability_model", "node_count"),
    "C": ("node_count",),
    "D": (),
}


@dataclass
class Registry:
    """Projects and jobs by id, the ids taken, and the organisation's clock."""

    spec_era: str = "D"
    projects: dict[str, Project] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    clock_us: int = EPOCH_US

    def new_id(self, rng: random.Random) -> str:
        """Draw a fresh 7-character id, unique across projects and jobs."""
        while True:
            candidate = "".join(rng.choices(_ID_ALPHABET, k=7))
            if candidate not in self.ids:
                self.ids.add(candidate)
                return candidate

    def bump_project(self, project: Project, us: int) -> None:
        """Move a project's updated_at forward to `us`, never back."""
        if us > project.updated_us:
            project.updated_us = us
            project.data["updated_at"] = iso(us)

    def add_project(self, rng: random.Random, name: str, created_us: int) -> Project:
        """Create and register an empty project."""
        project_id = self.new_id(rng)
        created_us, created_text = stamp(rng, created_us)
        data: dict[str, Any] = {
            "id": project_id,
            "name": name,
            "created_at": created_text,
            "updated_at": created_text,
            "team_name": None if rng.random() < 0.25 else rng.choice(_TEAM_NAMES),
        }
        if rng.random() < 0.15:
            data["is_archived"] = False  # a field newer than the archiver
        project = Project(data, {"id": project_id, "name": name}, created_us, created_us)
        self.projects[project_id] = project
        self.clock_us = max(self.clock_us, created_us)
        return project

    def add_job(self, rng: random.Random, project: Project, created_us: int, status: str, count: int) -> Job:
        """Create and register a job with `count` checkpoints planned after `created_us`."""
        job_id = self.new_id(rng)
        created_us, created_text = stamp(rng, created_us)
        gap_us = rng.randrange(5, 90) * MINUTE
        updated_us = created_us - created_us % SECOND + gap_us * (count + 1)
        updated_us, updated_text = stamp(rng, updated_us)
        kind = rng.choices(("lora", "full", "whisper"), weights=(80, 17, 3))[0]
        lora = rng.randrange(len(_LORA_CONFIGS))
        legacy = status in TERMINAL_STATUSES and rng.random() < 0.05
        plan = Plan(
            count=count,
            stride=rng.choice((50, 100, 250, 500, 1000)),
            first_us=created_us - created_us % SECOND,
            gap_us=gap_us,
            kind=kind,
            lora=lora,
            size=_size(rng, kind),
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
        data["node_count"] = 2 if rng.random() < 0.08 else 1
        for later in SPEC_ERAS[self.spec_era]:  # an older server does not know these yet
            del data[later]
        job = Job(data, project.data["id"], created_us, plan)
        self.jobs[job_id] = job
        project.job_ids.append(job_id)
        self.bump_project(project, updated_us)
        self.clock_us = max(self.clock_us, updated_us)
        return job


def generate(spec: OrgSpec) -> Registry:
    """Build the projects and jobs of the spec; checkpoints stay implicit in each job's plan."""
    registry = Registry(spec_era=spec.spec_era)
    rng = random.Random(spec.seed)
    total_jobs = spec.projects * spec.jobs_per_project
    # An exact active count, not a per-job coin flip, so tests can rely on the fraction.
    active = set(rng.sample(range(total_jobs), round(total_jobs * spec.active_fraction)))
    created_us = EPOCH_US
    for p in range(spec.projects):
        created_us += rng.randrange(1, 48) * HOUR
        project = registry.add_project(rng, _generated_name(p), created_us)
        job_us = created_us
        for j in range(spec.jobs_per_project):
            job_us += rng.randrange(10, 24 * 60) * MINUTE
            index = p * spec.jobs_per_project + j
            status = _weighted(rng, _ACTIVE_WEIGHTS if index in active else _TERMINAL_WEIGHTS)
            registry.add_job(rng, project, job_us, status, _checkpoint_count(rng, spec, status))
    return registry


def _checkpoint_count(rng: random.Random, spec: OrgSpec, status: str) -> int:
    """Decide up front how many checkpoints a job has, so totals never need generation."""
    wanted = spec.checkpoints_per_job
    if status == "TRAINING_JOB_DEPLOY_FAILED":
        return 0  # it never ran
    if status == "TRAINING_JOB_FAILED":
        return rng.randint(wanted // 2, wanted)
    return wanted


def _generated_name(index: int) -> str:
    """Name the index-th generated project; every fifth repeats an earlier name, as Baseten allows."""
    if index % 5 == 2:
        index -= 2
    name = PROJECT_NAMES[index % len(PROJECT_NAMES)]
    return name if index < len(PROJECT_NAMES) else f"{name}-{index // len(PROJECT_NAMES)}"


def _size(rng: random.Random, kind: str) -> int:
    """Draw a realistic checkpoint size in bytes for a checkpoint type."""
    exponent = {"lora": (7.0, 9.0), "full": (10.0, 11.0), "whisper": (9.3, 9.6)}[kind]
    return int(10 ** rng.uniform(*exponent))


def generated_checkpoints(spec: OrgSpec, job_id: str, job: Job) -> list[dict[str, Any]]:
    """Regenerate a job's checkpoints from (seed, job id), oldest first."""
    plan = job.plan
    rng = random.Random(f"{spec.seed}:{job_id}")
    active = job.data["current_status"] not in TERMINAL_STATUSES
    fraction = spec.syncing_fraction
    return [checkpoint(rng, job_id, plan, i, active, fraction) for i in range(plan.count)]


def checkpoint(
    rng: random.Random, job_id: str, plan: Plan, index: int, active: bool, syncing_fraction: float
) -> dict[str, Any]:
    """Build checkpoint number `index` of a plan; every call draws the same number of values."""
    # Jitter stays under half a gap, so created_at strictly increases with the step.
    whole_us = plan.first_us + plan.gap_us * (index + 1) + rng.randrange(plan.gap_us // 2 // SECOND) * SECOND
    _, created_text = stamp(rng, whole_us)
    kind = "full" if plan.kind == "lora" and rng.random() < 0.03 else plan.kind
    syncing = rng.random() < syncing_fraction
    variant = rng.randrange(len(_LORA_VARIANTS[0]))
    extra = rng.random() < 0.02
    made: dict[str, Any] = {
        "checkpoint_id": f"checkpoint-{plan.stride * (index + 1)}",
        "training_job_id": job_id,
        "created_at": created_text,
        "checkpoint_type": kind,
        "base_model": None,
        "size_bytes": plan.size,
    }
    if kind != plan.kind:
        made["size_bytes"] = plan.size * 40  # a merged full model next to its adapters
    if plan.done_word is not None:
        made["sync_status"] = "SYNCING" if active and syncing else plan.done_word
    if kind == "lora":
        config = _LORA_VARIANTS[plan.lora][variant]
        made["base_model"] = config["base_model_name_or_path"]
        made["lora_adapter_config"] = config
    else:
        made["base_model"] = _WHISPER_BASE_MODEL if kind == "whisper" else None
        made["lora_adapter_config"] = None
    if extra:
        made["storage_region"] = "us-east-1"
    return made


def _reorderings(config: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """Return the same config with several key orders, as different writers of adapter_config.json produce."""
    keys = list(config)
    half = len(keys) // 2
    orders = (keys, keys[::-1], sorted(keys), keys[half:] + keys[:half])
    return tuple({key: config[key] for key in order} for order in orders)


_LORA_VARIANTS = tuple(_reorderings(config) for config in _LORA_CONFIGS)


def iso(us: int, style: int = _PLAIN) -> str:
    """Format microseconds since the Unix epoch as ISO 8601 in UTC."""
    seconds, micros = divmod(us, SECOND)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if style == _FRACTIONAL:
        return f"{base}.{micros:06d}Z"
    if style == _OFFSET:
        return f"{base}+00:00"
    return f"{base}Z"


def parse_iso(text: str) -> int:
    """Parse an ISO 8601 timestamp into microseconds since the Unix epoch."""
    moment = datetime.fromisoformat(text)
    return round(moment.timestamp() * SECOND)


def stamp(rng: random.Random, whole_us: int) -> tuple[int, str]:
    """Pick a spelling for a whole-second instant, adding a fraction only where it will be shown."""
    roll = rng.random()
    if roll < 0.08:
        us = whole_us + rng.randrange(1, SECOND)
        return us, iso(us, _FRACTIONAL)
    if roll < 0.12:
        return whole_us, iso(whole_us, _OFFSET)
    return whole_us, iso(whole_us)


def _weighted(rng: random.Random, weights: Mapping[str, int]) -> str:
    """Choose a key of `weights` with probability proportional to its value."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]
