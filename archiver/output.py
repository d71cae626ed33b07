"""Render rows as an aligned table, CSV, JSON or JSON Lines: every listing goes through here.

Table mode is for people: aligned columns, numbers right-aligned, byte counts (columns named
`bytes` or `*_bytes`) as 1.5 GiB, a bold header only when asked for colour. CSV, JSON and JSON
Lines are for programs: raw numbers, ISO 8601 timestamps in UTC, and rows written as they come.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

import click

FORMATS = ("table", "csv", "json", "jsonl")

Formatter = Callable[[Any], str]

_BOLD, _RESET = "\x1b[1m", "\x1b[0m"


def use_color(stream: TextIO) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def is_bytes_column(name: str) -> bool:
    """Whether a column holds a byte count, by the archive's naming convention."""
    return name == "bytes" or name.endswith("_bytes")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        # JSON has no NaN or Infinity; PostgreSQL's to_json writes them as these strings too.
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()  # a PostgreSQL interval, in seconds
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


def _number(value: float) -> str:
    """Four significant digits, no trailing zeros, never an exponent: 0.009313, 5.2, 123.5, 12346."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    decimals = min(10, max(0, 3 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _utc(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Decimal):
        return str(value) if value == value.to_integral_value() else _number(float(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    fmt: str = "table",
    *,
    humanize: Mapping[str, Formatter] | None = None,
    color: bool = False,
) -> str:
    """Render rows in one of FORMATS as one string."""
    return "".join(render_chunks(columns, rows, fmt, humanize=humanize, color=color))


def render_chunks(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    fmt: str = "table",
    *,
    humanize: Mapping[str, Formatter] | None = None,
    color: bool = False,
) -> Iterator[str]:
    """Render rows in one of FORMATS, yielding text as rows arrive (a table needs them all first).

    `humanize` formats chosen columns in table mode only; byte-count columns get `human_size`
    unless it says otherwise.
    """
    if fmt == "json":
        yield from _json_array(columns, rows)
    elif fmt == "jsonl":
        for row in rows:
            yield json.dumps(_record(columns, row), default=str) + "\n"
    elif fmt == "csv":
        yield from _csv(columns, rows)
    elif fmt == "table":
        formats = {name: human_size for name in columns if is_bytes_column(name)}
        formats.update(humanize or {})
        yield _table(columns, list(rows), formats, color)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _record(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    return {c: _jsonable(v) for c, v in zip(columns, row, strict=True)}


def _json_array(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    opened = False
    for row in rows:
        body = json.dumps(_record(columns, row), indent=2, default=str).replace("\n", "\n  ")
        yield ("[\n  " if not opened else ",\n  ") + body
        opened = True
    yield "\n]\n" if opened else "[]\n"


def _csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([json.dumps(v) if isinstance(v, dict | list | bool) else _jsonable(v) for v in row])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


# A table row is one line: line breaks, tabs and terminal escapes in values are shown escaped.
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]} | {
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
}


def _width(text: str) -> int:
    """Terminal cells `text` takes: two for wide East Asian characters and emoji, none for combining marks."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], formats: Mapping[str, Formatter], color: bool
) -> str:
    cells = [
        [
            (formats[c](v) if c in formats and v is not None else _cell(v)).translate(_CONTROLS)
            for c, v in zip(columns, row, strict=True)
        ]
        for row in rows
    ]
    widths = [max([_width(c)] + [_width(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows) and all(_is_number(row[i]) for row in rows if row[i] is not None)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        padded = (
            " " * (w - _width(v)) + v if num else v + " " * (w - _width(v))
            for v, w, num in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    header = line(list(columns))
    out = [f"{_BOLD}{header}{_RESET}" if color else header, line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    if not rows:
        out.append("(no rows)")
    return "\n".join(out) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def print_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str) -> None:
    """Print rows on stdout as they come; exit 1 quietly when the reader (head, less) has gone, as cat does."""
    color = use_color(sys.stdout)
    try:
        for chunk in render_chunks(columns, rows, fmt, color=color):
            click.echo(chunk, nl=False, color=color)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
