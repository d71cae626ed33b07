"""Time the archive can trust: the machine clock checked against the API's `Date` before a run writes.

Every stamp a run leaves (its start, the versions' periods, what it marks deleted) comes from the
machine clock, and stamps never go backwards: a run never starts before the latest run did. So one
night with the clock a year ahead would stamp every later run after it. The API's `Date` header is
a second opinion: when the two differ by more than --max-clock-skew, the run refuses to start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from archiver import durations
from archiver.errors import ClockSkew

DEFAULT_MAX_CLOCK_SKEW = timedelta(minutes=5)


def server_time(date_header: str | None) -> datetime | None:
    """The instant an HTTP `Date` header names (RFC 9110), or None if there is none or it is not a date."""
    if not date_header:
        return None
    try:
        when = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def check_skew(machine: datetime, server: datetime, limit: timedelta) -> None:
    """Raise ClockSkew when the machine clock and the API's differ by more than `limit`."""
    apart = abs((machine - server).total_seconds())
    if apart > limit.total_seconds():
        raise ClockSkew(
            f"the machine clock says {_iso(machine)} but the Baseten API's Date header says {_iso(server)}, "
            f"{_span(apart)} apart, more than --max-clock-skew {durations.describe(limit.total_seconds())}: "
            "nothing was written; set the clock right (NTP) and rerun, since every stamp a run leaves comes from it"
        )


def _span(seconds: float) -> str:
    """A difference of clocks, roughly: `365.0 days`, `2.5 hours`, `7.0 minutes`, `40 seconds`."""
    for size, unit in ((86400, "days"), (3600, "hours"), (60, "minutes")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
