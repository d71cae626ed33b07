"""Hold a sync at a request of the fake API, so a test can act while the run waits."""

from __future__ import annotations

import threading

from archiver.fake_api import FakeBaseten

from .waiting import GENEROUS_S


class Gate:
    """Hold every checkpoint request `fake` receives until `open()`; `reached` tells one has arrived."""

    def __init__(self, fake: FakeBaseten) -> None:
        self.reached = threading.Event()
        self._opened = threading.Event()
        fake.intercept(self._hold)

    def _hold(self, _method: str, path: str, _body: bytes) -> None:
        if path.split("?")[0].endswith("/checkpoints"):
            self.reached.set()
            self._opened.wait(GENEROUS_S)  # bounded: a test that fails never opens it

    def open(self) -> None:
        """Let held and later requests through."""
        self._opened.set()
