"""The protocol around the endpoints: auth, the rate limit, latency, faults, overrides and request metrics.

`FakeBaseten.handle` is the whole API without sockets. Two transports carry it: `transport()` hands
it httpx requests in-process, and `serve` (archiver.fake_api.server) puts it on loopback HTTP.
"""

from __future__ import annotations

import hmac
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from archiver.fake_api.generate import OrgSpec
from archiver.fake_api.org import Organisation
from archiver.fake_api.responses import DRIPPING, Response, html_error, message, too_many_requests
from archiver.fake_api.routes import Router
from archiver.fake_api.transport import FakeTransport

DEFAULT_API_KEY = "fake-baseten-key"

FAULT_KINDS: frozenset[str] = frozenset(
    {"429", "429-no-header", "500", "502", "503", "reset", "delay", "truncate", *DRIPPING}
)
BROKEN_KINDS: frozenset[str] = frozenset(
    {"not-json", "truncated", "missing-field", "wrong-type", "list-for-object"}
)

# Answers a request before routing, or returns None to let the fake answer: (method, path, body).
Hook = Callable[[str, str, bytes], Response | None]


@dataclass(frozen=True)
class Faults:
    """Transient faults drawn per request from a seeded RNG, plus jobs whose checkpoints are always broken."""

    seed: int = 0
    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "429-no-header", "500", "502", "503", "reset", "delay", "truncate")
    delay_s: float = 2.0
    drip_s: float = 0.2  # the pause between the pieces of a "trickle" or "endless" body
    broken_jobs: Mapping[str, str] = field(default_factory=dict)
    retry_after_s: int = 1  # what a faulted 429 tells the client to wait; 0 keeps test suites fast

    def __post_init__(self) -> None:
        if unknown := set(self.kinds) - FAULT_KINDS:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {sorted(FAULT_KINDS)}")
        if unknown := set(self.broken_jobs.values()) - BROKEN_KINDS:
            raise ValueError(
                f"unknown broken-job kinds {sorted(unknown)}; choose from {sorted(BROKEN_KINDS)}"
            )
        if self.rate > 0 and not self.kinds:
            raise ValueError("a positive fault rate needs at least one fault kind")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it; status 0 means it got no answer (a reset, or the client timed out)."""

    method: str
    path: str
    status: int
    started: float
    finished: float


class FakeBaseten(Organisation):
    """An in-memory Baseten organisation that answers the training management API."""

    def __init__(
        self,
        spec: OrgSpec = OrgSpec(),
        *,
        api_key: str = DEFAULT_API_KEY,
        latency_ms: float = 0.0,
        rate_limit_rps: float | None = None,
        retry_after_header: bool = True,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_limit_rps is not None and rate_limit_rps <= 0:
            raise ValueError("rate_limit_rps must be positive or None")
        super().__init__(spec)
        self._api_key = api_key.encode()
        self._latency_s = latency_ms / 1000.0
        self._rate_limit = rate_limit_rps
        self._retry_after_header = retry_after_header
        self._clock = clock  # when requests start and finish, for the rate limit and the metrics
        self._faults = faults or Faults()
        self._fault_rng = random.Random(self._faults.seed)
        self._router = Router(self, self._faults.broken_jobs)
        self._hooks: tuple[Hook, ...] = ()  # replaced whole, never changed in place: readers take no lock
        # The API's own clock: when set, every answer carries its time in a `Date` header.
        self.date: Callable[[], datetime] | None = None

        # Metrics lock: guards request records, the in-flight gauge, rate-limit windows and the fault RNG.
        self._metrics_lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._windows: dict[bytes, deque[float]] = {}

    def transport(self) -> FakeTransport:
        """Return an httpx transport that answers from this fake in-process, for `BasetenClient(transport=...)`."""
        return FakeTransport(self)

    # ----------------------------------------------------------------------------------------------
    # overrides

    def override(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: Any = b"",
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer `method path` (query string ignored) with `status` and `body` until `clear_overrides`.

        Bytes go out as given, anything else as JSON. Auth, the rate limit, faults and metrics apply
        as to any request; the newest override of a path wins.
        """
        answer = Response.of(status, body, headers=headers)
        wanted = (method.upper(), urlsplit(path).path)
        self.intercept(lambda m, p, _: answer if (m, urlsplit(p).path) == wanted else None)

    def intercept(self, hook: Hook) -> None:
        """Let `hook(method, path, body)` answer requests before the endpoints do; None lets them answer."""
        self._hooks = (hook, *self._hooks)

    def clear_overrides(self) -> None:
        """Forget every override and hook: the endpoints answer again."""
        self._hooks = ()

    # ----------------------------------------------------------------------------------------------
    # metrics

    @property
    def requests(self) -> list[RequestRecord]:
        """Return every request handled since the last reset, in finishing order."""
        with self._metrics_lock:
            return list(self._records)

    def request_count(self, path_prefix: str = "") -> int:
        """Count handled requests whose path starts with `path_prefix`."""
        with self._metrics_lock:
            return sum(record.path.startswith(path_prefix) for record in self._records)

    @property
    def in_flight(self) -> int:
        """Return how many requests are being handled right now."""
        with self._metrics_lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Return the most requests that were being handled at the same moment."""
        with self._metrics_lock:
            return self._max_in_flight

    def max_requests_in_window(self, window_s: float = 1.0) -> int:
        """Return the most requests whose start falls inside any window of `window_s` seconds."""
        starts = sorted(record.started for record in self.requests)
        best, first = 0, 0
        for last, start in enumerate(starts):
            while start - starts[first] >= window_s:
                first += 1
            best = max(best, last - first + 1)
        return best

    def reset_metrics(self) -> None:
        """Forget recorded requests and peaks; rate-limit windows and the fault RNG carry on."""
        with self._metrics_lock:
            self._records.clear()
            self._max_in_flight = self._in_flight

    # ----------------------------------------------------------------------------------------------
    # the protocol

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        read_timeout_s: float | None = None,
    ) -> Response:
        """Answer one HTTP request, recording it in the metrics.

        A client that would stop waiting after `read_timeout_s` gets a "timeout" fault instead of
        an answer that takes longer (latency and delay faults); over a socket its timer does that.
        """
        started = self._clock()
        with self._metrics_lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        status = 500  # what gets recorded if answering raises
        try:
            response = self._respond(method.upper(), path, headers, body, started, read_timeout_s)
            if self.date is not None:
                response = replace(
                    response, headers={**response.headers, "Date": format_datetime(self.date(), usegmt=True)}
                )
            status = 0 if response.fault in ("reset", "timeout") else response.status
            return response
        finally:
            record = RequestRecord(method.upper(), path, status, started, self._clock())
            with self._metrics_lock:
                self._in_flight -= 1
                self._records.append(record)

    def _respond(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        arrived: float,
        read_timeout_s: float | None,
    ) -> Response:
        """Apply latency, auth, the rate limit and faults, then answer from a hook or the endpoints."""
        timed_out = Response(0, {}, b"", fault="timeout")
        if not _sleep_within(self._latency_s, 0.0, read_timeout_s):
            return timed_out
        key = _presented_key(headers)
        if key is None or not hmac.compare_digest(key.encode(), self._api_key):
            return message(401, "Invalid API key")
        retry_after = self._over_rate_limit(key.encode(), arrived)
        if retry_after is not None:
            return too_many_requests(retry_after, header=self._retry_after_header)
        fault, html = self._draw_fault()
        if fault == "delay" and not _sleep_within(self._faults.delay_s, self._latency_s, read_timeout_s):
            return timed_out
        if fault == "429":
            return too_many_requests(self._faults.retry_after_s, header=True)
        if fault == "429-no-header":
            return too_many_requests(self._faults.retry_after_s, header=False)
        if fault in ("500", "502", "503"):
            status = int(fault)
            return html_error(status) if html else message(status, HTTPStatus(status).phrase)
        if fault == "reset":
            return Response(0, {}, b"", fault="reset")
        response = self._answer(method, path, body)
        if fault in DRIPPING:
            return response.dripped(fault, self._faults.drip_s)
        return replace(response, fault="truncate") if fault == "truncate" else response

    def _answer(self, method: str, path: str, body: bytes) -> Response:
        """Let the newest hook that answers do so, else the endpoints."""
        for hook in self._hooks:
            if (response := hook(method, path, body)) is not None:
                return response
        return self._router.route(method, path, body)

    def _over_rate_limit(self, key: bytes, now: float) -> int | None:
        """Admit a request into the key's sliding one-second window, or return seconds to wait."""
        if self._rate_limit is None:
            return None
        with self._metrics_lock:
            window = self._windows.setdefault(key, deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= self._rate_limit:
                return max(1, math.ceil(window[0] + 1.0 - now))
            window.append(now)
            return None

    def _draw_fault(self) -> tuple[str | None, bool]:
        """Draw whether this request fails, how, and whether a 5xx comes as HTML."""
        faults = self._faults
        if faults.rate <= 0:
            return None, False
        with self._metrics_lock:
            if self._fault_rng.random() >= faults.rate:
                return None, False
            return self._fault_rng.choice(faults.kinds), self._fault_rng.random() < 0.5


def _sleep_within(seconds: float, spent: float, timeout: float | None) -> bool:
    """Sleep `seconds`, or only until `timeout` after `spent` seconds already waited; tell whether it was all."""
    if timeout is not None and spent + seconds > timeout:
        time.sleep(max(0.0, timeout - spent))
        return False
    if seconds:
        time.sleep(seconds)
    return True


def _presented_key(headers: Mapping[str, str]) -> str | None:
    """Return the key from an `Api-Key` or `Bearer` Authorization header, if there is one."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in ("api-key", "bearer") or not token.strip():
        return None
    return token.strip()
