"""Durations on the command line: one parser for --max-run-time, --max-rate-limited-time and --since."""

from __future__ import annotations

import pytest

from archiver.durations import describe, parse_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("6h", 21_600),
        ("7d", 604_800),
        ("2w", 1_209_600),
        ("1h30m", 5_400),
        (" 1d 12h ", 129_600),
        ("1.5h", 5_400),
        ("6H", 21_600),
        ("90", 90),
        ("0.5", 0.5),
    ],
)
def test_a_duration_reads_as_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "soon", "5 parsecs", "-5m", "-5", "nan", "inf", "1h and then some", "h"]
)
def test_anything_else_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match="90s, 15m, 6h or 7d"):
        parse_seconds(text)


def test_plain_seconds_can_be_refused() -> None:
    with pytest.raises(ValueError):
        parse_seconds("2026", plain=False)
    assert parse_seconds("2026s", plain=False) == 2026


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (1, "1 second"),
        (2, "2 seconds"),
        (1.5, "1.5 seconds"),
        (90, "90 seconds"),
        (600, "10 minutes"),
        (5_400, "90 minutes"),
        (82_800, "23 hours"),
        (86_400, "1 day"),
        (604_800, "1 week"),
    ],
)
def test_a_duration_is_said_in_its_largest_whole_unit(seconds: float, said: str) -> None:
    assert describe(seconds) == said
