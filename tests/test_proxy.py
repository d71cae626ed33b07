"""Behind a proxy: a sync reaches the API through the one the environment names, as urllib and requests do.

The API is named `api.baseten.test`, a name only the test's proxy knows (it sends it to the fake API on
loopback): a request that went around the proxy would not find it.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from archiver import bounds, network
from archiver.errors import UsageError
from archiver.fake_api import FakeBaseten, OrgSpec, serve

from .support.certificates import issued
from .support.commands import run_archiver, sync_env
from .support.databases import scalar
from .support.proxy import Seen, forwarding_proxy

SPEC = OrgSpec(seed=5, projects=2, jobs_per_project=2, checkpoints_per_job=3)
NAME = "api.baseten.test"  # RFC 2606: never a real host


@pytest.fixture
def fake() -> FakeBaseten:
    return FakeBaseten(SPEC)


@pytest.fixture
def loopback_url(fake: FakeBaseten) -> Iterator[str]:
    with serve(fake) as url:
        yield url


@pytest.fixture
def api_url(loopback_url: str) -> str:
    """The fake API by the name only the proxy knows."""
    return loopback_url.replace("127.0.0.1", NAME)


@pytest.fixture
def proxy() -> Iterator[tuple[str, Seen]]:
    with forwarding_proxy({NAME: "127.0.0.1"}) as running:
        yield running


def served(fake: FakeBaseten) -> int:
    return sum(len(fake.checkpoints(job_id)) for job_id in fake.job_ids())


def requests_made(output: str) -> int:
    found = re.search(r"; (\d+) requests in ", output)
    assert found, output
    return int(found.group(1))


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_sync_reaches_the_api_through_the_proxy_the_environment_names(
    variable: str,
    fake: FakeBaseten,
    api_url: str,
    proxy: tuple[str, Seen],
    database_url: str,
    engine: Engine,
) -> None:
    proxy_url, seen = proxy
    result = run_archiver("sync", "--migrate", env=sync_env(api_url, database_url) | {variable: proxy_url})
    assert result.exit_code == 0, result.output
    assert scalar(engine, "SELECT count(*) FROM checkpoints") == served(fake) > 0
    assert len(seen.requests) == requests_made(result.output) > SPEC.projects
    assert all(url.startswith(f"{api_url}/v1/") for _, url in seen.requests), seen.requests


def test_a_sync_over_https_goes_through_the_proxy_in_a_tunnel(
    fake: FakeBaseten, proxy: tuple[str, Seen], database_url: str, engine: Engine, tmp_path: Path
) -> None:
    context, trusted = issued(NAME, tmp_path)
    proxy_url, seen = proxy
    with serve(fake, tls=context) as loopback_url:
        https_url = loopback_url.replace("127.0.0.1", NAME)
        trust = {"HTTPS_PROXY": proxy_url, "SSL_CERT_FILE": str(trusted)}
        result = run_archiver("sync", "--migrate", env=sync_env(https_url, database_url) | trust)
    assert result.exit_code == 0, result.output
    assert scalar(engine, "SELECT count(*) FROM checkpoints") == served(fake) > 0
    tunnel = ("CONNECT", https_url.removeprefix("https://"))
    assert seen.requests and set(seen.requests) == {tunnel}, seen.requests


def test_an_https_proxy_is_verified_against_the_certificates_the_environment_trusts(
    fake: FakeBaseten, api_url: str, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """The proxy's own certificate, signed by a CA certifi does not hold, is trusted through SSL_CERT_FILE;
    the API behind it is reached in plain HTTP, inside the TLS to the proxy."""
    context, trusted = issued("127.0.0.1", tmp_path)
    with forwarding_proxy({NAME: "127.0.0.1"}, tls=context) as (proxy_url, seen):
        assert proxy_url.startswith("https://")
        trust = {"HTTP_PROXY": proxy_url, "SSL_CERT_FILE": str(trusted)}
        result = run_archiver("sync", "--migrate", env=sync_env(api_url, database_url) | trust)
    assert result.exit_code == 0, result.output
    assert scalar(engine, "SELECT count(*) FROM checkpoints") == served(fake) > 0
    assert len(seen.requests) == requests_made(result.output)


def test_the_proxy_password_goes_to_the_proxy_and_nowhere_else(
    fake: FakeBaseten, api_url: str, proxy: tuple[str, Seen], database_url: str, engine: Engine
) -> None:
    proxy_url, seen = proxy
    with_login = proxy_url.replace("://", "://archiver:pr0xy-s3cret-pw@")
    env = sync_env(api_url, database_url) | {"HTTP_PROXY": with_login}
    result = run_archiver("sync", "--migrate", "-vv", env=env)
    assert result.exit_code == 0, result.output
    login = "Basic " + base64.b64encode(b"archiver:pr0xy-s3cret-pw").decode()
    assert seen.authorizations and set(seen.authorizations) == {login}
    assert "pr0xy-s3cret-pw" not in result.output


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_that_wants_a_login_stops_the_sync_at_once_saying_so(
    scheme: str, fake: FakeBaseten, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """407 to a plain request (an answer) or to a tunnel (no answer from the API at all): never retried."""
    context, trusted = issued(NAME, tmp_path)
    login = "Basic " + base64.b64encode(b"archiver:right").decode()
    with (
        forwarding_proxy({NAME: "127.0.0.1"}, login=login) as (proxy_url, seen),
        serve(fake, tls=context if scheme == "https" else None) as loopback_url,
    ):
        url = loopback_url.replace("127.0.0.1", NAME)
        wrong = proxy_url.replace("://", "://archiver:wr0ng-pr0xy-pw@")
        env = sync_env(url, database_url) | {"ALL_PROXY": wrong, "SSL_CERT_FILE": str(trusted)}
        result = run_archiver("sync", "--migrate", "-vv", env=env)
    assert result.exit_code == 1, result.output
    assert (
        "error: cannot list training projects: the proxy refused GET /v1/training_projects (407 Proxy "
        "Authentication Required); check the proxy that HTTPS_PROXY, HTTP_PROXY or ALL_PROXY names, and the "
        "login in it\n"
    ) in result.output
    assert "(attempt 1)" in result.output and "(attempt 2)" not in result.output
    assert len(seen.requests) == 1 and "wr0ng-pr0xy-pw" not in result.output
    assert scalar(engine, "SELECT count(*) FROM checkpoints") == 0


def test_the_api_on_loopback_is_reached_directly_whatever_the_proxy(
    fake: FakeBaseten, loopback_url: str, proxy: tuple[str, Seen], database_url: str, engine: Engine
) -> None:
    """`archiver demo` and `archiver fake-api` serve on loopback, which a proxy elsewhere cannot reach."""
    proxy_url, seen = proxy
    result = run_archiver(
        "sync", "--migrate", env=sync_env(loopback_url, database_url) | {"ALL_PROXY": proxy_url}
    )
    assert result.exit_code == 0, result.output
    assert scalar(engine, "SELECT count(*) FROM checkpoints") == served(fake)
    assert seen.requests == []


def test_no_proxy_sends_a_sync_around_the_proxy(
    api_url: str, proxy: tuple[str, Seen], database_url: str
) -> None:
    """Around it, nothing knows the API's name: the run fails at its first request, which the proxy never saw."""
    proxy_url, seen = proxy
    env = sync_env(api_url, database_url) | {"HTTP_PROXY": proxy_url, "NO_PROXY": ".baseten.test"}
    result = run_archiver("sync", "--migrate", "--max-attempts", "1", env=env)
    assert result.exit_code == 1, result.output
    assert "cannot list training projects: ConnectError on GET /v1/training_projects" in result.output
    assert seen.requests == []


UNUSABLE = (
    "HTTP_PROXY (or ALL_PROXY) names a proxy the archiver cannot use: it must be an http:// or https:// URL "
    "(socks5:// needs httpx's socks extra); set NO_PROXY to reach the API directly"
)


def test_a_proxy_the_archiver_cannot_use_is_named_without_its_password(
    api_url: str, database_url: str
) -> None:
    proxy_url = "ftp://archiver:pr0xy-s3cret-pw@proxy.example:21"
    result = run_archiver(
        "sync", "--migrate", env=sync_env(api_url, database_url) | {"HTTP_PROXY": proxy_url}
    )
    assert result.exit_code == 2, result.output
    assert result.output == f"error: {UNUSABLE}\n"


def test_a_socks_proxy_without_httpx_socks_extra_is_refused_as_unusable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)  # as where the extra is not installed
    monkeypatch.setenv("HTTP_PROXY", "socks5://archiver:pr0xy-s3cret-pw@proxy.example:1080")
    with pytest.raises(UsageError) as raised:
        bounds.transport(httpx.Limits(), f"http://{NAME}")
    assert str(raised.value) == UNUSABLE


@pytest.mark.parametrize(
    ("environment", "url", "expected"),
    [
        ({}, "https://api.baseten.co", None),
        ({"HTTPS_PROXY": "proxy.corp:3128"}, "https://api.baseten.co", "http://proxy.corp:3128"),
        ({"HTTPS_PROXY": "http://p:1", "HTTP_PROXY": "http://q:2"}, "http://api.baseten.co", "http://q:2"),
        ({"ALL_PROXY": "http://p:1"}, "https://api.baseten.co", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".baseten.co"}, "https://api.baseten.co", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, "https://api.baseten.co", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "no_proxy": "*"}, "https://api.baseten.co", None),
        (
            {"https_proxy": "http://p:1", "NO_PROXY": "api.baseten.co:8443"},
            "https://api.baseten.co:8443",
            None,
        ),
        ({"ALL_PROXY": "http://p:1"}, "http://127.0.0.1:8080", None),
        ({"ALL_PROXY": "http://p:1"}, "http://127.8.9.10", None),
        ({"ALL_PROXY": "http://p:1"}, "http://[::1]:8080", None),
        ({"ALL_PROXY": "http://p:1"}, "http://localhost:8080", None),
        ({"ALL_PROXY": "http://p:1"}, "http://10.0.0.5:8080", "http://p:1"),
    ],
)
def test_the_proxy_for_a_url_is_read_as_urllib_reads_the_environment(
    environment: dict[str, str], url: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert network.proxy_for(url) == expected
