"""The API's OpenAPI schemas: the fields each object has, requires and may leave null.

`data/training-schemas-by-era.json` holds the training schemas of the published management spec in
its four eras (A-D, March to August 2026), copied unchanged from the reference material; `SCHEMAS`
is the latest, era D, which the contract follows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_VENDORED = Path(__file__).resolve().parent.parent / "data" / "training-schemas-by-era.json"

ERAS: dict[str, dict[str, Any]] = {
    era: entry["schemas"] for era, entry in json.loads(_VENDORED.read_text())["eras"].items()
}
SCHEMAS: dict[str, Any] = ERAS["D"]


def properties(name: str) -> set[str]:
    """Every field the schema `name` (e.g. "TrainingJobV1") describes."""
    return set(SCHEMAS[name]["properties"])


def required(name: str) -> set[str]:
    """The fields the schema `name` requires."""
    return set(SCHEMAS[name].get("required", []))
