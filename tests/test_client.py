"""The HTTP client: auth header, pacing, and what each failure turns into."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from archiver.client import BasetenClient, RateLimiter, RetryPolicy
from archiver.errors import (
    ApiError,
    ArchiverError,
    AuthError,
    Forbidden,
    MalformedResponse,
    NotFound,
    UsageError,
)

KEY = "sk-test-3f9a1c"
PROJECTS: dict[str, list[object]] = {"training_projects": []}


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], waits: list[float] | None = None, attempts: int = 4
) -> BasetenClient:
    recorded = waits if waits is not None else []

    def wait(seconds: float) -> bool:
        recorded.append(seconds)
        return False

    return BasetenClient(
        KEY,
        "https://api.example.test",
        max_rps=1000,
        retry=RetryPolicy(attempts=attempts, backoff_s=0.5, max_backoff_s=4),
        transport=httpx.MockTransport(handler),
        wait=wait,
    )


def sequence(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def test_sends_the_documented_auth_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PROJECTS)

    assert client_for(handler).list_projects().json() == {"training_projects": []}
    assert seen[0].headers["Authorization"] == f"Api-Key {KEY}"
    assert seen[0].url.path == "/v1/training_projects"
    assert seen[0].headers["User-Agent"].startswith("archiver/")


@pytest.mark.parametrize(
    "base", ["https://api.example.test", "https://api.example.test/", "https://gw.example.test/baseten/"]
)
def test_paths_go_under_the_base_urls_own_path(base: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"training_job": {}, "checkpoints": []})

    client = BasetenClient(KEY, base, max_rps=1000, transport=httpx.MockTransport(handler))
    client.get_checkpoints("p 1", "j?2")
    prefix = base.split(".test", 1)[1].rstrip("/")
    assert seen[0].url.raw_path.decode() == f"{prefix}/v1/training_projects/p%201/jobs/j%3F2/checkpoints"
    assert seen[0].url.host == base.split("//")[1].split("/")[0]


def test_429_waits_as_told_then_retries() -> None:
    waits: list[float] = []
    client = client_for(
        sequence(
            httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow down", "retry_after": 37}),
            httpx.Response(429, json={"error": "Rate limit exceeded.", "retry_after": 3}),
            httpx.Response(200, json=PROJECTS),
        ),
        waits,
    )
    assert client.list_projects().json() == {"training_projects": []}
    assert waits == [7.0, 3.0]
    assert client.rate_limited == 2


def test_5xx_and_resets_back_off_with_jitter_then_succeed() -> None:
    waits: list[float] = []
    client = client_for(
        sequence(
            httpx.Response(503, text="<html>unavailable</html>"),
            httpx.ConnectError("connection refused"),
            httpx.ReadTimeout("timed out"),
            httpx.Response(200, json=PROJECTS),
        ),
        waits,
    )
    assert client.list_projects().json() == {"training_projects": []}
    assert len(waits) == 3
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0 and 1.0 <= waits[2] <= 2.0


def test_retries_are_bounded() -> None:
    client = client_for(lambda request: httpx.Response(500, text="boom"), attempts=3)
    with pytest.raises(ApiError, match="gave up after 3 attempts"):
        client.get_checkpoints("n4q95w5", "p7qr9qv")


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthError), (403, Forbidden)], ids=["401-fatal", "403-its-unit"]
)
def test_a_refused_request_is_not_retried_and_never_echoes_the_key(
    status: int, error: type[ArchiverError]
) -> None:
    """401: the key is refused, the run stops. 403: the key may not read this one project or job."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"message": f"bad key {KEY}"})

    with pytest.raises(error) as raised:
        client_for(handler).get_checkpoints("n4q95w5", "p7qr9qv")
    assert calls == [1]
    assert KEY not in str(raised.value) and ("refused the API key" in str(raised.value)) == (status == 401)


def test_404_is_not_found_with_its_location() -> None:
    client = client_for(lambda request: httpx.Response(404, json={"message": "not found"}))
    with pytest.raises(NotFound) as raised:
        client.get_checkpoints("n4q95w5", "p7qr9qv")
    assert "project n4q95w5" in str(raised.value) and "job p7qr9qv" in str(raised.value)


def test_non_json_body_is_malformed_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, text="<html>maintenance</html>", headers={"Content-Type": "text/html"})

    response = client_for(handler).get_checkpoints("n4q95w5", "p7qr9qv")
    with pytest.raises(MalformedResponse, match="not valid JSON"):
        response.json()
    assert calls == [1] and response.body == b"<html>maintenance</html>"


def test_search_posts_the_job_id() -> None:
    bodies: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"training_jobs": []})

    assert client_for(handler).search_jobs(job_id="p7qr9qv").json() == {"training_jobs": []}
    assert bodies == [{"job_id": "p7qr9qv", "project_id": None}]


def test_rate_limiter_never_admits_more_than_rate_in_any_second() -> None:
    """By the limiter's clock, which the test moves: read after each call on the real clock, a loaded
    machine can wake a request late and count 21 in a second the limiter admitted 20 in."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(20, clock=lambda: now[0], sleep=sleep)
    starts = []
    for index in range(45):
        turn = limiter.reserve()
        now[0] += 0.04 * (index % 3)  # the way to the wire takes a while, some requests longer
        limiter.on_the_wire(turn)
        starts.append(now[0])
    in_a_second = max(sum(1 for t in starts if s <= t < s + 1.0 - 1e-9) for s in starts)
    assert in_a_second == 20
    assert starts[-1] - starts[0] >= 2.0


def test_on_the_wire_a_request_goes_at_its_turn_and_never_makes_more_than_rate_in_a_second() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(3, clock=lambda: now[0], sleep=sleep)
    turns = [limiter.reserve() for _ in range(4)]
    assert [round(turn, 3) for turn in turns] == [0.0, 0.333, 0.667, 1.0]  # spread over the second
    now[0] = 0.9  # the first three were held back on the way: they reach the wire together
    held = [limiter.on_the_wire(turn) for turn in turns]
    # The fourth's turn is 1.0, but three went out at 0.9: it is held until a second after them.
    assert [round(h, 3) for h in held] == [0.0, 0.0, 0.0, 1.0] and round(now[0], 3) == 1.9


def test_429_without_retry_after_backs_off_and_an_http_date_is_honoured() -> None:
    waits: list[float] = []
    soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    client = client_for(
        sequence(
            httpx.Response(429, json={"error": "Rate limit exceeded."}),
            httpx.Response(429, text="slow down"),
            httpx.Response(429, headers={"Retry-After": soon}),
            httpx.Response(200, json=PROJECTS),
        ),
        waits,
    )
    assert client.list_projects().json() == {"training_projects": []}
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0
    assert 20 <= waits[2] <= 30


def test_retry_after_zero_means_now_not_backoff() -> None:
    waits: list[float] = []
    client = client_for(
        sequence(httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200, json=PROJECTS)), waits
    )
    assert client.list_projects().json() == {"training_projects": []}
    assert waits == [0.0]


def test_a_wait_past_the_deadline_gives_up_at_once() -> None:
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    client = BasetenClient(
        KEY,
        "https://api.example.test",
        max_rps=1000,
        retry=RetryPolicy(attempts=10, deadline_s=5),
        transport=httpx.MockTransport(lambda r: httpx.Response(429, json={"retry_after": 37})),
        wait=wait,
    )
    with pytest.raises(
        ApiError, match=r"HTTP 429 .* asked to wait 37 seconds .* deferred to the next run"
    ) as raised:
        client.get_checkpoints("n4q95w5", "p7qr9qv")
    assert raised.value.kind == "deferred" and waits == []


def test_a_body_garbled_in_transit_is_retried() -> None:
    waits: list[float] = []
    client = client_for(
        sequence(
            httpx.Response(200, stream=httpx.ByteStream(b"not gzip"), headers={"Content-Encoding": "gzip"}),
            httpx.Response(200, json=PROJECTS),
        ),
        waits,
    )
    assert client.list_projects().json() == {"training_projects": []} and len(waits) == 1


def test_a_stopping_client_sends_nothing_more() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503)

    client = client_for(answer, attempts=5)
    client.stop()
    with pytest.raises(ApiError, match="not sent: the run is stopping"):
        client.list_projects()
    assert sent == []


def test_a_redirect_is_an_error_naming_where_it_points() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(301, headers={"Location": "https://elsewhere.example/v1/training_projects"})

    with pytest.raises(ApiError, match=r"HTTP 301, a redirect to https://elsewhere\.example") as raised:
        client_for(handler).list_projects()
    assert calls == [1] and "BASETEN_API_URL" in str(raised.value)


def test_a_redirect_to_a_location_that_is_no_url_is_an_error_quoting_it() -> None:
    client = client_for(lambda r: httpx.Response(302, headers={"Location": "http://[::1/v1"}))
    with pytest.raises(ApiError, match=r"HTTP 302, a redirect to http://\[::1/v1; check --api-url"):
        client.list_projects()


def test_sends_the_same_headers_every_time_and_never_a_cookie_the_api_set() -> None:
    """The API is read with its key alone: a cookie it sets (here one echoing the key) is not sent back."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PROJECTS, headers={"Set-Cookie": f"session={KEY}; Path=/"})

    client = client_for(handler)
    client.list_projects()
    client.list_projects()
    first, second = (dict(request.headers) for request in seen)
    assert first == second
    assert "cookie" not in second
    assert set(first) == {"host", "accept", "accept-encoding", "connection", "user-agent", "authorization"}
    assert first["accept-encoding"] == "gzip, deflate"


def test_an_error_body_echoing_the_key_is_redacted() -> None:
    client = client_for(lambda r: httpx.Response(400, json={"message": f"bad header Api-Key {KEY}"}))
    with pytest.raises(ApiError) as raised:
        client.get_checkpoints("n4q95w5", "p7qr9qv")
    assert KEY not in str(raised.value) and "<api key>" in str(raised.value)


@pytest.mark.parametrize("body", [b'{"checkpoints": NaN}', b'{"size": Infinity}', b"[" * 100_000])
def test_json_extensions_and_absurd_nesting_are_malformed(body: bytes) -> None:
    client = client_for(lambda r: httpx.Response(200, content=body))
    with pytest.raises(MalformedResponse, match="not valid JSON"):
        client.get_checkpoints("n4q95w5", "p7qr9qv").json()


@pytest.mark.parametrize("key", ["", "   ", "sk-\u00e9t\u00e9", "sk-1\nsk-2", "Api-Key sk-1"])
def test_a_key_no_header_can_carry_is_a_usage_error_that_does_not_quote_it(key: str) -> None:
    with pytest.raises(UsageError) as raised:
        BasetenClient(key, "https://api.example.test")
    assert (key.strip() or "@@") not in str(raised.value)


def test_a_trailing_newline_on_the_key_is_ignored() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json=PROJECTS)

    client = BasetenClient(f"{KEY}\n", "https://x.test", max_rps=1000, transport=httpx.MockTransport(handler))
    client.list_projects()
    assert seen == [f"Api-Key {KEY}"]


def test_an_api_url_without_scheme_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="BASETEN_API_URL"):
        BasetenClient(KEY, "api.baseten.co")


def test_a_body_echoing_the_key_is_kept_with_the_key_masked() -> None:
    client = client_for(lambda r: httpx.Response(200, json={"training_projects": [{"id": KEY}]}))
    response = client.list_projects()
    assert KEY.encode() not in response.body and response.json() == {
        "training_projects": [{"id": "<api key>"}]
    }
    assert (response.method, response.path, response.status) == ("GET", "/v1/training_projects", 200)


def test_a_429_whose_body_nests_too_deep_to_read_is_waited_out_like_any_other() -> None:
    """A 429 without Retry-After whose body nests 100,000 deep ended the run: "unexpected RecursionError"."""
    deep = b"[" * 100_000 + b"]" * 100_000
    waits: list[float] = []
    client = client_for(
        sequence(httpx.Response(429, content=deep), httpx.Response(200, json=PROJECTS)), waits
    )
    assert client.list_projects().json() == PROJECTS
    assert len(waits) == 1 and 0 < waits[0] <= 4  # the backoff, as for a 429 that says nothing
