"""The Baseten management API client: one bounded httpx transport, the endpoints the
archiver reads, pacing under the rate limit, and retries for what a retry can cure.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from archiver import __version__, answer, bounds, clock, durations, network, redaction
from archiver.answer import ApiResponse
from archiver.errors import (
    Abandoned,
    ApiError,
    ApiUnavailable,
    AuthError,
    Deferred,
    Forbidden,
    JobError,
    MalformedResponse,
    NotFound,
    ProxyRefused,
    UntrustedCertificate,
    UsageError,
)
from archiver.normalize import Where

log = logging.getLogger("archiver.client")

DEFAULT_API_URL = "https://api.baseten.co"
# The API allows 100/s per key. 95 leaves 5/s for other tools sharing the key, and for the jitter
# between a request leaving and the API counting it; lower it with --max-rps when they need more.
# At 100 ms a response, 95/s needs 10 requests in flight.
DEFAULT_MAX_RPS = 95.0
DEFAULT_CONCURRENCY = 16
# A checkpoint listing is about 400 bytes a checkpoint: 256 MiB holds over half a million of them.
DEFAULT_MAX_RESPONSE_MB = 256
# A checkpoint listing larger than this is left on disk and read as a stream (`archiver.streamed`):
# a job of 100,000 checkpoints is about 50 MB of JSON, and several times that once parsed.
SPILL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before a request fails its job."""

    attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    deadline_s: float = 300.0  # total time one request may take, waits included
    timeout_s: float = 30.0  # per attempt, from sending to the body's last byte


@dataclass
class _Try:
    """One attempt of a request: when it began, its turn, and how long it was held for it once connected."""

    began: float
    turn: float
    waited: float = 0.0

    @property
    def since(self) -> float:
        """What the try's time (--timeout) counts from: when it began, moved by how long it was held."""
        return self.began + self.waited


# How long before its turn a request sets out (connecting, or taking a kept-alive connection): long
# enough for the way there in a busy process (up to 124 ms was measured), short enough that no
# connection is held idle long while it waits for the turn itself.
APPROACH_S = 0.25


class RateLimiter:
    """Pace requests on the wire: at most `rate` in any one-second window, spread evenly.

    A request reserves its turn (`reserve`) and sets out shortly before it (`approach`), then goes on
    the wire at the turn itself, once connected (`on_the_wire`): paced a moment before they were
    handed over, requests that a busy process (the GIL, the connection pool) held back on the way
    reached the API bunched, and it counted 101 in one second of a run paced at 95.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._window = max(1, int(rate))
        self._clock = clock
        self._sleep = sleep  # the client's stop event's wait: a stopping run does not wait its turn
        self._lock = threading.Lock()
        self._next = 0.0
        self._reserved: deque[float] = deque()
        self._wire_lock = threading.Lock()
        self._wire: deque[float] = deque()

    def reserve(self) -> float:
        """The next turn (time.monotonic): an interval after the last, and a second after the one
        `rate` turns before; now, when none has been taken for a while."""
        with self._lock:
            start = max(self._next, self._clock())
            if len(self._reserved) >= self._window:
                start = max(start, self._reserved.popleft() + 1.0)
            self._reserved.append(start)
            self._next = start + self._interval
            return start

    def approach(self, turn: float) -> None:
        """Wait until APPROACH_S before `turn`: the rest of the way is the request's own."""
        wait = turn - APPROACH_S - self._clock()
        if wait > 0:
            self._sleep(wait)

    def on_the_wire(self, turn: float) -> float:
        """Hold a request until its turn, and while `rate` others went on the wire in the second before;
        record it going; return how long it was held.

        A request held back on the way goes late; the ones after it then wait here rather than
        follow it into the same second.
        """
        began = self._clock()
        if turn > began:
            self._sleep(turn - began)
        with self._wire_lock:
            now = self._clock()
            if len(self._wire) >= self._window:
                start = self._wire.popleft() + 1.0
                if start > now:
                    self._sleep(start - now)
                    now = max(self._clock(), start)
            self._wire.append(now)
        return max(0.0, now - began)


def _segment(identifier: str, where: Where, kind: str) -> str:
    """An id as one path segment: a `?` or control character in it cannot change the request.

    An id no segment can carry (`.`, `..`, a `/` even encoded, since servers decode it) fails its
    entry by name: requested, it would reach another URL, whose 404 would mark the id deleted.
    """
    if (problem := _unrequestable(identifier)) is not None:
        raise MalformedResponse(
            f"the {kind} id {redaction.shorten(repr(identifier), 80)} cannot be requested: {problem}, so its URL "
            "would name another resource; it is not read, and not marked deleted",
            project_id=where.project_id,
            job_id=where.job_id,
        )
    return urllib.parse.quote(identifier, safe="")


def _unrequestable(identifier: str) -> str | None:
    """Why an id cannot round-trip as a URL path segment, or None when it can."""
    for form in dict.fromkeys(
        (identifier, urllib.parse.unquote(identifier))
    ):  # as sent, and as a server decodes it
        if form in (".", ".."):
            return "'.' and '..' are path steps that HTTP clients and servers remove"
        if "/" in form or "\\" in form:
            return "a '/' or '\\' in it, even percent-encoded, splits the path where a server decodes it"
    return None


def check_base_url(base_url: str) -> None:
    """Refuse an API URL that is not an http(s) URL with a host and a valid port, before any request."""
    problem = _base_url_problem(base_url)
    if problem is not None:
        raise UsageError(f"the API URL is not usable: {problem}; check --api-url / BASETEN_API_URL")


def _base_url_problem(base_url: str) -> str | None:
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        return f"it cannot be parsed ({exc})"
    if url.scheme not in ("http", "https"):
        return f"it must start with https:// or http://, got {base_url[:80]!r}"
    if not url.host:
        return f"it names no host: {base_url[:80]!r}"
    if url.port is not None and not 0 < url.port < 65536:
        return f"port {url.port} is out of range (1 to 65535)"
    return None


class BasetenClient:
    """Read training projects, jobs and checkpoints from the Baseten management API."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_API_URL,
        *,
        max_rps: float = DEFAULT_MAX_RPS,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        wait: Callable[[float], bool] | None = None,
        max_response_mb: int = DEFAULT_MAX_RESPONSE_MB,
        max_rate_limited_s: float | None = None,
    ) -> None:
        api_key = api_key.strip()  # a trailing newline from `$(cat keyfile)` or an editor
        if not api_key or not api_key.isascii() or not api_key.isprintable() or " " in api_key:
            # httpx would fail on every request, and some of its errors quote the header.
            raise UsageError(
                "the API key is empty or contains spaces, control or non-ASCII characters that an HTTP header "
                "cannot carry; check BASETEN_API_KEY or the --api-key-file contents"
            )
        check_base_url(base_url)
        self.retry = retry or RetryPolicy()
        redaction.register(api_key)
        self._stopping = threading.Event()
        self._limiter = RateLimiter(max_rps, sleep=self._stopping.wait)
        # A try goes at its turn once connected; with a test's transport (no wire), before it is handed over.
        self._paced_on_the_wire = transport is None
        # Sleep between retries; returns True when the run is stopping. Tests pass a recorder.
        self._wait = wait or self._stopping.wait
        self.max_response_mb = max_response_mb
        self.max_rate_limited_s = max_rate_limited_s  # for the whole run; None: no limit
        self.rate_limited_s = 0.0  # time the run spent waiting as 429s asked (overlapping waits once)
        self._rate_limited_until = 0.0
        self.stop_reason: str | None = None  # why the run was stopped, when a limit (not a signal) did it
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        # Requests go to the transport itself, not through an httpx.Client: its layers (redirects,
        # which the archiver never follows, auth flows, a cookie jar, event hooks) did nothing the
        # archiver asks for and took 0.1-0.2 ms of CPU a request, under the GIL the writer needs.
        # What the client added is here: its headers and timeouts. No cookie is kept or sent back.
        self._transport = transport or bounds.transport(limits, base_url)
        self._headers = _headers(api_key)
        timeout = httpx.Timeout(self.retry.timeout_s, connect=min(10.0, self.retry.timeout_s))
        self._extensions = {"timeout": timeout.as_dict()}
        # Requests name whole URLs, each parsed once.
        self._base = str(httpx.URL(base_url.rstrip("/")))
        self.requests_made = 0
        self.rate_limited = 0
        self.server_date: datetime | None = None  # the `Date` of the first response that had one
        self._counting = threading.Lock()  # fetcher threads share the counters

    def __enter__(self) -> BasetenClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._transport.close()

    def stop(self, reason: str | None = None) -> None:
        """Send nothing more and stop waiting (a signal; or a limit, which gives its reason).

        Answers under way may finish: the run waits a moment for them (`archiver.sync.bounded`).
        """
        with self._counting:
            if reason is not None and not self._stopping.is_set():
                self.stop_reason = reason
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called: requests give up."""
        return self._stopping.is_set()

    def list_projects(self) -> ApiResponse:
        """GET /v1/training_projects."""
        return self._request("GET", "/v1/training_projects", Where(path="GET /v1/training_projects"))

    def list_jobs(self, project_id: str) -> ApiResponse:
        """GET /v1/training_projects/{id}/jobs."""
        where = Where(project_id)
        return self._request(
            "GET", f"/v1/training_projects/{_segment(project_id, where, 'project')}/jobs", where
        )

    def get_checkpoints(self, project_id: str, job_id: str) -> ApiResponse:
        """GET /v1/training_projects/{pid}/jobs/{jid}/checkpoints."""
        where = Where(project_id, job_id)
        project, job = _segment(project_id, where, "project"), _segment(job_id, where, "job")
        path = f"/v1/training_projects/{project}/jobs/{job}/checkpoints"
        return self._request("GET", path, where, spill=SPILL_BYTES)

    def search_jobs(self, *, job_id: str | None = None, project_id: str | None = None) -> ApiResponse:
        """POST /v1/training_jobs/search."""
        body = {"job_id": job_id, "project_id": project_id}
        return self._request("POST", "/v1/training_jobs/search", Where(project_id, job_id), json_body=body)

    def _request(
        self, method: str, path: str, where: Where, json_body: Any = None, spill: int | None = None
    ) -> ApiResponse:
        policy = self.retry
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            this = self._take_turn(method, path, where)
            on_wire = functools.partial(self._on_the_wire, this, method, path, where)
            if not self._paced_on_the_wire:
                on_wire()
            wait: float | None
            try:
                response = self._send(
                    method,
                    path,
                    json_body,
                    where,
                    deadline=this.since + policy.timeout_s,
                    spill=spill,
                    turn=on_wire if self._paced_on_the_wire else None,
                )
            except (httpx.TransportError, httpx.DecodingError) as exc:
                _log_attempt(method, path, type(exc).__name__, this.since, attempt)
                if (unretried := network.refusal(exc, f"{method} {path}", where)) is not None:
                    raise unretried from None  # no retry changes a certificate, or a proxy's refusal
                # Resets, refused connections, timeouts, bodies cut short or garbled in transit.
                # Only the class name: httpx messages can quote request headers.
                problem = f"{type(exc).__name__} on {method} {path}"
                if isinstance(exc, bounds.TooSlow) or time.monotonic() >= this.since + policy.timeout_s:
                    problem = f"no whole response within {policy.timeout_s:g}s (--timeout) on {method} {path}"
                wait = self._backoff(attempt)
            else:
                status = response.status_code
                _log_attempt(method, path, status, this.since, attempt)
                if self.server_date is None:
                    self.server_date = clock.server_time(response.headers.get("Date"))
                if status < 300:
                    return answer.of(response, where)
                if (final := _final(response, method, path, where)) is not None:
                    raise final
                if status == 429:
                    told = _retry_after(response)
                    wait = self._backoff(attempt) if told is None else told
                    if told is not None and time.monotonic() - started + told > policy.deadline_s:
                        # Longer than this request may wait: it alone is deferred, not the whole run.
                        self._count_rate_limited(0.0)
                        raise _deferred(f"HTTP 429 on {method} {path}", told, policy.deadline_s, where)
                    self._count_rate_limited(wait)
                else:  # 408, 5xx
                    wait = self._backoff(attempt)
                problem = f"HTTP {status} on {method} {path}"
            elapsed = time.monotonic() - started
            if self._stopping.is_set():
                raise Abandoned(
                    f"{problem}; not retried: the run is stopping",
                    project_id=where.project_id,
                    job_id=where.job_id,
                )
            if attempt >= policy.attempts or elapsed + wait > policy.deadline_s:
                raise ApiError(
                    f"{problem}, gave up after {attempt} attempts in {elapsed:.1f}s",
                    project_id=where.project_id,
                    job_id=where.job_id,
                )
            log.info("%s; retry %d of %d in %.1fs", problem, attempt, policy.attempts - 1, wait)
            if self._wait(wait):
                raise Abandoned(
                    f"{problem}; stopped while waiting to retry",
                    project_id=where.project_id,
                    job_id=where.job_id,
                )

    def _take_turn(self, method: str, path: str, where: Where) -> _Try:
        """Reserve a try's turn under --max-rps and wait until shortly before it; count the try and begin it."""
        turn = self._limiter.reserve()
        if not self._stopping.is_set():
            self._limiter.approach(turn)
        _not_stopping(self._stopping, method, path, where)
        with self._counting:
            self.requests_made += 1
        return _Try(time.monotonic(), turn)

    def _on_the_wire(self, this: _Try, method: str, path: str, where: Where) -> None:
        """Hold a try until its turn, once connected (`RateLimiter.on_the_wire`)."""
        this.waited = self._limiter.on_the_wire(this.turn)
        _not_stopping(self._stopping, method, path, where)

    def _send(
        self,
        method: str,
        path: str,
        json_body: Any,
        where: Where,
        *,
        deadline: float,
        spill: int | None,
        turn: Callable[[], None] | None,
    ) -> httpx.Response:
        """Send one attempt and read its whole body by `deadline`, within --max-response-mb as decoded.

        Everything from connecting to the body's last byte shares the deadline (`archiver.bounds`),
        but for the wait for `turn`, taken as the request goes on the wire.
        Reading the body here also retries a connection dropped mid-body like any reset.
        """
        request = httpx.Request(
            method, f"{self._base}{path}", headers=self._headers, json=json_body, extensions=self._extensions
        )
        limit = self.max_response_mb * 1024 * 1024
        try:
            return bounds.send(self._transport, request, deadline, limit, spill, turn)
        except bounds.TooLarge as exc:
            problem = f"the response is larger than --max-response-mb {self.max_response_mb} ({exc})"
            advice = "raise --max-response-mb if the API really holds that much"
        except OSError as exc:  # a large body goes to a temporary file (`bounds.send`)
            problem = f"the response could not be written to a temporary file ({exc.strerror or exc})"
            advice = "make room in the temporary directory (TMPDIR)"
        raise ApiError(
            f"{method} {path}: {problem}; {advice}", project_id=where.project_id, job_id=where.job_id
        )

    def _count_rate_limited(self, wait: float) -> None:
        """Add a 429's wait to the run's total; past --max-rate-limited-time, stop the run.

        The total is wall time: requests waiting side by side count once.
        """
        now = time.monotonic()
        with self._counting:
            self.rate_limited += 1
            self.rate_limited_s += max(0.0, now + wait - max(now, self._rate_limited_until))
            self._rate_limited_until = max(self._rate_limited_until, now + wait)
            spent, budget = self.rate_limited_s, self.max_rate_limited_s
        if budget is not None and spent > budget:
            self.stop(
                f"the API rate-limited this run (HTTP 429) for more than {durations.describe(budget)} "
                "(--max-rate-limited-time)"
            )

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.retry.max_backoff_s, self.retry.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def _headers(api_key: str) -> httpx.Headers:
    """What every request carries: the key, and the headers httpx.Client would have sent."""
    return httpx.Headers(
        {
            "Accept": "*/*",
            "Accept-Encoding": bounds.ACCEPT_ENCODING,
            "Connection": "keep-alive",
            "User-Agent": f"archiver/{__version__}",
            "Authorization": f"Api-Key {api_key}",
        }
    )


def _final(response: httpx.Response, method: str, path: str, where: Where) -> ApiError | AuthError | None:
    """What an answer that is not a success and that no retry can change means; None for one to retry
    (429, 408 and 5xx)."""
    status = response.status_code
    if status in (408, 429) or status >= 500:
        return None
    if status == 401:
        return refused(status)
    project_id, job_id = where.project_id, where.job_id
    if status == 407:  # from a proxy carrying plain HTTP
        return network.proxy_refused(
            f"{method} {path}", f"407 {response.reason_phrase}", status=407, where=where
        )
    if status < 400:
        location = redaction.shorten(redaction.redact(response.headers.get("Location", "nowhere")), 200)
        said = f"answered HTTP {status}, a redirect to {location}; check --api-url / BASETEN_API_URL"
        return ApiError(f"{method} {path} {said}", status=status, project_id=project_id, job_id=job_id)
    if status == 403:  # the key is good, but may not read this: its project or job fails
        said = f"answered HTTP 403, the API key may not read it: {_error_text(response)}"
        return Forbidden(f"{method} {path} {said}", status=status, project_id=project_id, job_id=job_id)
    if status == 404:
        kept = answer.of(response, where)
        said = "answered 404: gone or not visible"
        return NotFound(
            f"{method} {path} {said}", status=404, project_id=project_id, job_id=job_id, response=kept
        )
    said = f"answered HTTP {status}: {_error_text(response)}"
    return ApiError(f"{method} {path} {said}", status=status, project_id=project_id, job_id=job_id)


def _not_stopping(stopping: threading.Event, method: str, path: str, where: Where) -> None:
    """Raise Abandoned, the request unsent, if the run is stopping."""
    if stopping.is_set():
        message = f"{method} {path} not sent: the run is stopping"
        raise Abandoned(message, project_id=where.project_id, job_id=where.job_id)


def _log_attempt(method: str, path: str, answer: int | str, sent: float, attempt: int) -> None:
    """-vv: a line per attempt, with its status (or the transport error) and time; the key, a header,
    is never among what is logged."""
    if log.isEnabledFor(logging.DEBUG):
        ms = round((time.monotonic() - sent) * 1000, 1)
        status, error = (answer, None) if isinstance(answer, int) else (None, answer)
        log.debug(
            "%s %s: %s in %.0f ms (attempt %d)",
            method,
            path,
            answer,
            ms,
            attempt,
            extra={"event": "request", "method": method, "path": path, "status": status, "error": error}
            | {"ms": ms, "attempt": attempt},
        )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a 429: the Retry-After header (seconds or an HTTP date), else the
    body's `retry_after`; None when neither says, or what they say makes no sense.
    """
    header = response.headers.get("Retry-After")
    if header is not None and (seconds := _seconds(header)) is not None:
        return seconds
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):  # not JSON, or nested past what Python reads
        return None
    value = body.get("retry_after") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    return _seconds(str(value))


_LONGEST_WAIT_S = 366 * 24 * 3600.0


def _seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    # NaN compares false with everything: treat it, like a negative wait, as "now". Infinity, or a
    # wait of centuries, is a wait longer than any run: a year says as much and stays a number.
    return min(seconds, _LONGEST_WAIT_S) if seconds > 0 else 0.0


def _error_text(response: httpx.Response) -> str:
    """What an error response says, its secrets masked (before it is cut: no part of one survives), shortened.

    Read as JSON reads it, whatever its Content-Type claims: a charset header is the server's word.
    """
    text = redaction.text_of(response.content)
    try:
        body = json.loads(text)
        said = str(body.get("message") or body.get("error") or body) if isinstance(body, dict) else str(body)
    except (ValueError, RecursionError):  # not JSON, or nested past what Python reads
        said = text.strip() or response.reason_phrase
    return redaction.shorten(redaction.redact(said), 200)


def _deferred(problem: str, told: float, may_wait: float, where: Where) -> Deferred:
    return Deferred(
        f"{problem}: the API asked to wait {durations.describe(told)} (Retry-After), longer than a request "
        f"may wait ({durations.describe(may_wait)}, --max-retry-seconds); deferred to the next run",
        status=429,
        project_id=where.project_id,
        job_id=where.job_id,
    )


def refused(status: int) -> AuthError:
    """The fatal error of a key the API refused, saying what to check but never what the key is."""
    return AuthError(
        f"the Baseten API refused the API key (HTTP {status}); check BASETEN_API_KEY "
        "or --api-key-file, and that the key's team can see these projects"
    )


def unreachable(exc: JobError) -> ApiUnavailable | AuthError:
    """Turn a failed organisation-level request into the fatal error it is."""
    if isinstance(exc, Forbidden):  # a key that may not list the projects can read nothing
        return refused(403)
    # A certificate's or a proxy's refusal says what to check itself.
    says = isinstance(exc, UntrustedCertificate | ProxyRefused)
    advice = "" if says else "; check BASETEN_API_URL and the network"
    return ApiUnavailable(f"cannot list training projects: {exc.message}{advice}")
