"""Render rows as an aligned table, CSV, JSON or JSON Lines: every listing goes through here."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

FORMATS = ("table", "csv", "json", "jsonl")

Formatter = Callable[[Any], str]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def human_size(value: Any) -> str:
    """Render a byte count for people: 1.5 GiB."""
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str = "table",
    *,
    humanize: Mapping[str, Formatter] | None = None,
) -> str:
    """Render rows in one of FORMATS; `humanize` formats chosen columns in table mode only."""
    if fmt == "json":
        return (
            json.dumps(
                [{c: _jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows],
                indent=2,
                default=str,
            )
            + "\n"
        )
    if fmt == "jsonl":
        return "".join(
            json.dumps({c: _jsonable(v) for c, v in zip(columns, row, strict=True)}, default=str) + "\n"
            for row in rows
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_jsonable(v) if not isinstance(v, dict | list) else json.dumps(v) for v in row])
        return buffer.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    humanize = humanize or {}
    cells = [
        [
            humanize[c](v) if c in humanize and v is not None else _cell(v)
            for c, v in zip(columns, row, strict=True)
        ]
        for row in rows
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(_is_number(row[i]) for row in rows if row[i] is not None) and bool(rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    if not rows:
        out.append("(no rows)")
    return "\n".join(out) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def progress_line() -> Callable[[int, int], None] | None:
    """A progress callback that redraws one stderr line, or None when stderr is not a terminal
    (cron, pipes) or log lines are on (they would interleave)."""
    if not sys.stderr.isatty() or logging.getLogger("archiver").isEnabledFor(logging.INFO):
        return None

    def draw(done: int, total: int) -> None:
        sys.stderr.write(f"\r\033[Kjobs {done}/{total}")
        sys.stderr.flush()

    return draw
