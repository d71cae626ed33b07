"""Rendering: tables for people, raw values for programs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

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
