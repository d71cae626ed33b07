"""Timestamps as UTC instants: read back from either database, or as the API spelled them."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|([+-])(\d\d):(\d\d))")


def utc(value: object) -> datetime | None:
    """Read a timestamp column the way a BI tool sees it, as UTC (SQLite returns naive UTC or text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime), value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def instant(text: str) -> datetime | None:
    """The instant an RFC 3339 date-time names, truncated to microseconds; None if outside years 1-9999."""
    m = _STAMP.fullmatch(text)
    assert m, text
    fraction = int((m[7] or "0")[:6].ljust(6, "0"))
    naive = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]), fraction)
    offset = (
        timedelta(0)
        if m[8] == "Z"
        else (1 if m[9] == "+" else -1) * timedelta(hours=int(m[10]), minutes=int(m[11]))
    )
    try:
        return (naive - offset).replace(tzinfo=UTC)
    except OverflowError:
        return None


def stopped(moment: datetime) -> Callable[[], datetime]:
    """A clock for `sync(..., clock=...)` that always reads `moment`: a night at a time a test chooses."""
    return lambda: moment
