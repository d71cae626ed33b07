"""The Baseten management API client: one configured httpx client, the endpoints the
archiver reads, pacing under the rate limit, and retries for what a retry can cure.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from archiver import __version__
from archiver.errors import ApiError, ApiUnavailable, AuthError, MalformedResponse, NotFound
from archiver.normalize import Where, items, obj

log = logging.getLogger("archiver.client")

DEFAULT_API_URL = "https://api.baseten.co"
DEFAULT_MAX_RPS = 50.0  # the API allows 100/s per key; leave room for other tools sharing the key
DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before a request fails its job."""

    attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    deadline_s: float = 300.0  # total time one request may take, waits included
    timeout_s: float = 30.0  # per attempt: connect, read, write


class RateLimiter:
    """Pace request starts: at most `rate` in any one-second window, spread evenly."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._window = max(1, int(rate))
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self._starts: deque[float] = deque()
        # A little slack so that jitter between our clock and the server's never makes a
        # window hold one request too many.
        self._margin = 0.02

    def acquire(self) -> None:
        """Block until a request may start."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if len(self._starts) >= self._window:
                start = max(start, self._starts[0] + 1.0 + self._margin)
                self._starts.popleft()
            self._starts.append(start)
            self._next = start + self._interval
        delay = start - self._clock()
        if delay > 0:
            time.sleep(delay)


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
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._limiter = RateLimiter(max_rps)
        self._stopping = threading.Event()
        # Sleep between retries; returns True when the run is stopping. Tests pass a recorder.
        self._wait = wait or self._stopping.wait
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Api-Key {api_key}", "User-Agent": f"archiver/{__version__}"},
            timeout=httpx.Timeout(self.retry.timeout_s, connect=min(10.0, self.retry.timeout_s)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
            follow_redirects=False,
        )
        self.requests_made = 0
        self.rate_limited = 0

    def __enter__(self) -> BasetenClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def stop(self) -> None:
        """Make waiting requests give up (used on SIGINT/SIGTERM)."""
        self._stopping.set()

    def list_projects(self) -> list[Any]:
        """GET /v1/training_projects."""
        where = Where(path="GET /v1/training_projects")
        body = obj(self._get_json("/v1/training_projects", where), where)
        return items(body.get("training_projects"), where / "training_projects")

    def get_project(self, project_id: str) -> Any:
        """GET /v1/training_projects/{id}."""
        where = Where(project_id)
        body = obj(self._get_json(f"/v1/training_projects/{project_id}", where), where)
        return body.get("training_project")

    def list_jobs(self, project_id: str) -> tuple[Any, list[Any]]:
        """GET /v1/training_projects/{id}/jobs: the project and its jobs."""
        where = Where(project_id)
        body = obj(self._get_json(f"/v1/training_projects/{project_id}/jobs", where), where)
        return body.get("training_project"), items(body.get("training_jobs"), where / "training_jobs")

    def get_checkpoints(self, project_id: str, job_id: str) -> Any:
        """GET /v1/training_projects/{pid}/jobs/{jid}/checkpoints, as parsed JSON."""
        where = Where(project_id, job_id)
        return self._get_json(f"/v1/training_projects/{project_id}/jobs/{job_id}/checkpoints", where)

    def search_jobs(self, *, job_id: str | None = None, project_id: str | None = None) -> list[Any]:
        """POST /v1/training_jobs/search."""
        where = Where(project_id, job_id)
        body = {"job_id": job_id, "project_id": project_id}
        response = self._request("POST", "/v1/training_jobs/search", where, json_body=body)
        payload = obj(_parse_json(response, where), where)
        return items(payload.get("training_jobs"), where / "training_jobs")

    def _get_json(self, path: str, where: Where) -> Any:
        return _parse_json(self._request("GET", path, where), where)

    def _request(self, method: str, path: str, where: Where, json_body: Any = None) -> httpx.Response:
        policy = self.retry
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self._limiter.acquire()
            self.requests_made += 1
            wait: float | None
            try:
                response = self._http.request(method, path, json=json_body)
                # Read the body here, so a connection dropped mid-body is retried like any reset.
                response.read()
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__} on {method} {path}"
                wait = self._backoff(attempt)
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status in (401, 403):
                    raise AuthError(
                        f"the Baseten API refused the API key (HTTP {status}); check BASETEN_API_KEY "
                        "or --api-key-file, and that the key's team can see these projects"
                    )
                if status == 404:
                    raise NotFound(
                        f"{method} {path} answered 404: gone or not visible",
                        status=404,
                        project_id=where.project_id,
                        job_id=where.job_id,
                    )
                if status == 429:
                    self.rate_limited += 1
                    wait = _retry_after(response) or self._backoff(attempt)
                elif status >= 500 or status == 408:
                    wait = self._backoff(attempt)
                else:
                    raise ApiError(
                        f"{method} {path} answered HTTP {status}: {_error_text(response)}",
                        status=status,
                        project_id=where.project_id,
                        job_id=where.job_id,
                    )
                problem = f"HTTP {status} on {method} {path}"
            elapsed = time.monotonic() - started
            if attempt >= policy.attempts or elapsed + wait > policy.deadline_s or self._stopping.is_set():
                raise ApiError(
                    f"{problem}, gave up after {attempt} attempts in {elapsed:.1f}s",
                    project_id=where.project_id,
                    job_id=where.job_id,
                )
            log.info("%s; retry %d of %d in %.1fs", problem, attempt, policy.attempts - 1, wait)
            if self._wait(wait):
                raise ApiError(
                    f"{problem}; stopped while waiting to retry",
                    project_id=where.project_id,
                    job_id=where.job_id,
                )

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.retry.max_backoff_s, self.retry.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a 429: the Retry-After header, else the body's `retry_after`."""
    header = response.headers.get("Retry-After")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    try:
        value = response.json().get("retry_after")
    except (ValueError, AttributeError):
        return None
    return max(0.0, float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:200]
    return str(body)[:200]


def _parse_json(response: httpx.Response, where: Where) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = response.headers.get("Content-Type", "no content type")
        raise MalformedResponse(
            f"response is not valid JSON ({kind}, {len(response.content)} bytes): {exc}",
            project_id=where.project_id,
            job_id=where.job_id,
        ) from None


def unreachable(exc: ApiError) -> ApiUnavailable:
    """Turn a failed organisation-level request into the fatal error it is."""
    return ApiUnavailable(
        f"cannot list training projects: {exc.message}; check BASETEN_API_URL and the network"
    )
