"""Durations as people write them on a command line: 90s, 15m, 6h, 7d, 2w, 1h30m, or plain seconds."""

from __future__ import annotations

import math
import re

EXAMPLES = "90s, 15m, 6h or 7d"
UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_NAMES = {"w": "week", "d": "day", "h": "hour", "m": "minute", "s": "second"}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])")


def parse_seconds(text: str, *, plain: bool = True) -> float:
    """Read a duration as seconds: 90s, 15m (m is minutes), 6h, 7d, 2w, 1h30m, or, when `plain`, 90.

    Raise ValueError for anything else, negative or not finite.
    """
    spec = text.strip().lower()
    if plain:
        try:
            seconds = float(spec)
        except ValueError:
            pass
        else:
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"expected a duration such as {EXAMPLES}, got {text!r}")
            return seconds
    parts = _PART.findall(spec)
    if not parts or _PART.sub("", spec).strip():
        raise ValueError(f"expected a duration such as {EXAMPLES}, got {text!r}")
    return sum(float(amount) * UNITS[unit] for amount, unit in parts)


def describe(seconds: float) -> str:
    """Say a duration in its largest whole unit: 90 seconds, 10 minutes, 23 hours, 1 week."""
    for unit, size in UNITS.items():
        amount = seconds / size
        if amount >= 1 and amount == int(amount):
            return _counted(int(amount), _NAMES[unit])
    return _counted(seconds, "second")


def _counted(amount: float, name: str) -> str:
    return f"{amount:g} {name}" + ("" if amount == 1 else "s")
