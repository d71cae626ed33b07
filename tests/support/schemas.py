"""The API's OpenAPI schemas: the fields each object has, requires and may leave null.

`data/checkpoints-openapi-schemas.json` is vendored from the checkpoints endpoint's spec, unchanged;
TrainingProjectV1 comes from the full management spec (baseten-api.md §2.2), which is not vendored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_VENDORED = Path(__file__).resolve().parent.parent / "data" / "checkpoints-openapi-schemas.json"

SCHEMAS: dict[str, Any] = {
    **json.loads(_VENDORED.read_text())["components"]["schemas"],
    "TrainingProjectV1": {
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "latest_job": {"anyOf": [{"$ref": "#/components/schemas/TrainingJobV1"}, {"type": "null"}]},
            "team_name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["id", "name", "created_at", "updated_at", "latest_job"],
        "type": "object",
    },
}


def properties(name: str) -> set[str]:
    """Every field the schema `name` (e.g. "TrainingJobV1") describes."""
    return set(SCHEMAS[name]["properties"])


def required(name: str) -> set[str]:
    """The fields the schema `name` requires."""
    return set(SCHEMAS[name].get("required", []))
