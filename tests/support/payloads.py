"""A sample job and its checkpoints, as the API documents them, for tests that build responses by hand."""

from __future__ import annotations

import copy
from typing import Any

JOB: dict[str, Any] = {
    "id": "p7qr9qv",
    "name": "sft-lr2e-4",
    "created_at": "2026-05-14T11:58:40Z",
    "updated_at": "2026-05-14T13:02:51Z",
    "current_status": "TRAINING_JOB_COMPLETED",
    "error_message": None,
    "instance_type": {
        "id": "H100:8x208x1800",
        "name": "8xH100",
        "memory_limit_mib": 1843200,
        "millicpu_limit": 208000,
        "gpu_count": 8,
        "gpu_type": "H100",
        "gpu_memory_limit_mib": 81920,
    },
    "training_project_id": "n4q95w5",
    "training_project": {"id": "n4q95w5", "name": "qwen3-8b-support-sft"},
    "checkpoint_sync_status": "COMPLETED",
    "priority": 5,
    "availability_model": "DEDICATED",
    "user": {"email": "alice@example.com"},
    "node_count": 2,
}
LORA = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": "Qwen/Qwen3-8B",
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "bias": "none",
    "target_modules": ["q_proj", "v_proj"],
}
CHECKPOINTS: list[dict[str, Any]] = [
    {
        "checkpoint_id": "checkpoint-500",
        "training_job_id": "p7qr9qv",
        "created_at": "2026-05-14T12:31:09Z",
        "checkpoint_type": "lora",
        "base_model": "Qwen/Qwen3-8B",
        "size_bytes": 174391296,
        "sync_status": "COMPLETE",
        "lora_adapter_config": LORA,
    },
    {
        "checkpoint_id": "checkpoint-1000",
        "training_job_id": "p7qr9qv",
        "created_at": "2026-05-14T12:59:44Z",
        "checkpoint_type": "full",
        "base_model": None,
        "size_bytes": 16388044800,
        "sync_status": "SYNCING",
        "lora_adapter_config": None,
        "storage_region": "us-east-1",
    },
]


# A TrainingProjectV1 as listed.
PROJECT: dict[str, Any] = {
    "id": "n4q95w5",
    "name": "qwen3-8b-support-sft",
    "created_at": "2026-05-02T09:14:07Z",
    "updated_at": "2026-05-14T13:02:51Z",
    "team_name": "ml-platform",
    "latest_job": None,
}


def payload(**changes: Any) -> dict[str, Any]:
    """A checkpoint listing of JOB, its parts replaced by `changes`."""
    body = {"training_job": copy.deepcopy(JOB), "checkpoints": copy.deepcopy(CHECKPOINTS)}
    body.update(changes)
    return body


def project_for(project_id: str, name: str) -> dict[str, Any]:
    """A TrainingProjectV1 with no jobs yet."""
    return {
        "id": project_id,
        "name": name,
        "created_at": "2026-05-02T09:14:07Z",
        "updated_at": "2026-05-02T09:14:07Z",
        "latest_job": None,
    }
