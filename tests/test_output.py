"""Rendering: tables for people, raw values for programs."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from archiver.output import render

COLUMNS = ["name", "size_bytes", "hours", "seen_at"]
ROWS = [
    ["small", 1536, 0.0093131, datetime(2026, 6, 1, 12, 30, tzinfo=UTC)],
    [
        "large",
        Decimal(5 * 2**40),
        12345.678,
        datetime(2026, 6, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
    ],
]


def test_table_is_aligned_with_human_sizes_and_plain_numbers() -> None:
    assert render(COLUMNS, ROWS) == (
        "name   size_bytes     hours  seen_at\n"
        "-----  ----------  --------  -------------------\n"
        "small     1.5 KiB  0.009313  2026-06-01 12:30:00\n"
        "large     5.0 TiB     12346  2026-06-01 12:30:00\n"
    )


def test_colour_only_when_asked() -> None:
    assert "\x1b[1m" in render(COLUMNS, ROWS, color=True).splitlines()[0]
    assert "\x1b[" not in render(COLUMNS, ROWS)


def test_machine_formats_keep_raw_values_in_utc() -> None:
    expected = [
        {"name": "small", "size_bytes": 1536, "hours": 0.0093131, "seen_at": "2026-06-01T12:30:00+00:00"},
        {
            "name": "large",
            "size_bytes": 5 * 2**40,
            "hours": 12345.678,
            "seen_at": "2026-06-01T12:30:00+00:00",
        },
    ]
    assert json.loads(render(COLUMNS, ROWS, "json")) == expected
    assert [json.loads(line) for line in render(COLUMNS, ROWS, "jsonl").splitlines()] == expected
    assert render(COLUMNS, ROWS, "csv").splitlines()[1:] == [
        "small,1536,0.0093131,2026-06-01T12:30:00+00:00",
        f"large,{5 * 2**40},12345.678,2026-06-01T12:30:00+00:00",
    ]
    assert json.loads(render(COLUMNS, [], "json")) == []
    assert render(COLUMNS, []).endswith("(no rows)\n")


def test_csv_and_json_spell_booleans_and_intervals_as_data_tools_expect() -> None:
    from datetime import timedelta

    rows = [(True, timedelta(days=1, hours=2))]
    assert render(["ok", "took"], rows, "csv") == "ok,took\ntrue,93600.0\n"
    assert render(["ok", "took"], rows, "jsonl") == '{"ok": true, "took": 93600.0}\n'


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def test_non_finite_numbers_are_valid_json_and_csv() -> None:
    # PostgreSQL returns NUMERIC 'Infinity' as Decimal: json and csv output crashed with OverflowError;
    # a float NaN came out as the bare NaN token, which is not JSON.
    values = [Decimal("Infinity"), Decimal("-Infinity"), Decimal("NaN"), float("nan"), float("inf")]
    columns = [f"c{i}" for i in range(len(values))]
    expected = ["Infinity", "-Infinity", "NaN", "NaN", "Infinity"]
    assert strict_json(render(columns, [values], "json")) == [dict(zip(columns, expected, strict=True))]
    assert strict_json(render(columns, [values], "jsonl")) == dict(zip(columns, expected, strict=True))
    assert render(columns, [values], "csv").splitlines()[1] == ",".join(expected)


def test_table_stays_aligned_with_wide_characters_and_line_breaks() -> None:
    # A CJK or emoji project name (two terminal cells a character) or a newline in an error
    # message pushed every later column out of line in table mode.
    table = render(
        ["project_name", "error_message", "jobs"],
        [["日本語プロジェクト", "CUDA-OOM\nretry", 3], ["🦜-sft", "a\tb", 12], ["x", None, 1]],
    )
    lines = table.splitlines()
    assert len(lines) == 5, table  # header, rule, one line a row
    rule = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[1])]
    for line in lines[2:]:
        tokens = [
            (display_width(line[: m.start()]), display_width(line[: m.end()]))
            for m in re.finditer(r"\S+", line)
        ]
        assert tokens[0][0] == rule[0][0], table  # left-aligned text starts under its rule
        assert tokens[-1][1] == rule[-1][1], table  # right-aligned numbers end under theirs
        if len(tokens) == 3:
            assert tokens[1][0] == rule[1][0], table
