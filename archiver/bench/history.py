"""The benchmark's history: each run's figures appended as one JSON line, so every change shows its before and after.

A line holds what the run printed (under "figures"), how it was run ("options") and where: the git commit
(and whether the work tree had changes) as the run began, the date it ended, the machine's cores and the
Python version.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPOSITORY / "benchmarks" / "history.jsonl"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPOSITORY, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source() -> dict[str, Any]:
    """The commit the work tree is at, and whether it has changes: what a run measures, read as it starts.

    A benchmark takes minutes; what is committed meanwhile was not measured.
    """
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(status) if status is not None else None,
    }


def record(
    options: dict[str, Any], figures: dict[str, Any], measured: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One history entry: the run's figures and what they were measured on (`source()` as the run began)."""
    measured = measured or source()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": measured["commit"],
        "uncommitted_changes": measured["uncommitted_changes"],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "options": options,
        "figures": figures,
    }


def append(path: Path, entry: dict[str, Any]) -> None:
    """Append one entry as a line of JSON (the directory is made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as history:
        history.write(json.dumps(entry, sort_keys=True) + "\n")
