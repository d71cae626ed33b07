"""Wait for the event a test is about, not for a length of time that is usually enough."""

from __future__ import annotations

import time
from collections.abc import Callable

GENEROUS_S = 60.0  # reached only when something is broken, so it can be long


def wait_for(
    condition: Callable[[], object],
    what: str,
    *,
    timeout: float = GENEROUS_S,
    unless: Callable[[], object] | None = None,
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds, or once `unless()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert unless is None or not unless(), f"gave up waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
