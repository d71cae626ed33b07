"""Baseten's certificate is verified as httpx would verify it, with the context `archiver.network` makes ahead."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trustme
from sqlalchemy.engine import Engine

from archiver import network
from archiver.client import BasetenClient
from archiver.errors import UntrustedCertificate, UsageError
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, OrgSpec, serve

from .support import certificates
from .support.commands import run_archiver, sync_env
from .support.databases import scalar

SPEC = OrgSpec(seed=3, projects=2, jobs_per_project=2, checkpoints_per_job=3)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    return certificates.ca_file(ca, tmp_path)


@pytest.fixture
def fake() -> FakeBaseten:
    return FakeBaseten(SPEC)


@pytest.fixture
def https_url(fake: FakeBaseten, ca: trustme.CA) -> Iterator[str]:
    """The fake API over HTTPS, its certificate (for 127.0.0.1) signed by `ca` alone."""
    with serve(fake, tls=certificates.server_context(ca, "127.0.0.1")) as url:
        yield url


@pytest.fixture
def no_trust_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def described(context: ssl.SSLContext) -> dict[str, Any]:
    """What decides which certificates a context accepts, and how it connects."""
    return {
        "ca_certs": context.get_ca_certs(),
        "verify_mode": context.verify_mode,
        "verify_flags": context.verify_flags,
        "check_hostname": context.check_hostname,
        "options": context.options,
        "minimum_version": context.minimum_version,
        "maximum_version": context.maximum_version,
    }


@pytest.mark.parametrize("trust", ["certifi", "SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_the_context_made_ahead_is_the_one_httpx_makes(
    trust: str, ca_file: Path, monkeypatch: pytest.MonkeyPatch, no_trust_settings: None
) -> None:
    if trust == "SSL_CERT_FILE":
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    elif trust == "SSL_CERT_DIR":
        monkeypatch.setenv("SSL_CERT_DIR", str(ca_file.parent))
    network.start_tls()
    ahead = network.tls_context()
    expected = described(httpx.create_ssl_context())
    assert described(ahead) == expected
    if trust == "SSL_CERT_FILE":
        assert len(expected["ca_certs"]) == 1
    elif trust == "certifi":
        assert len(expected["ca_certs"]) > 100


def test_a_bundle_that_cannot_be_read_fails_where_the_client_is_made_not_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_trust_settings: None
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    on_thread: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", on_thread.append)
    network.start_tls()
    with pytest.raises(UsageError, match=r"SSL_CERT_FILE names .*missing\.pem.*No such file or directory"):
        network.tls_context()
    assert on_thread == []


@pytest.mark.parametrize(
    ("bundle", "said"),
    [
        ("missing.pem", "No such file or directory"),
        (".", "Is a directory"),
        ("notes.txt", "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found"),
    ],
)
def test_a_sync_names_an_unreadable_ssl_cert_file_and_writes_nothing(
    bundle: str, said: str, tmp_path: Path, database_url: str, engine: Engine
) -> None:
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    path = (tmp_path / bundle).resolve()
    env = sync_env("https://127.0.0.1:9", database_url) | {"SSL_CERT_FILE": str(path)}
    result = run_archiver("sync", "--migrate", env=env)
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: SSL_CERT_FILE names {str(path)!r}, which is not a bundle of CA certificates the archiver can "
        f"read ({said}); name a PEM file, or unset it to trust certifi's bundle\n"
    )
    assert sa.inspect(engine).get_table_names() == []


def test_the_client_verifies_with_the_context_made_ahead(
    https_url: str, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, no_trust_settings: None
) -> None:
    """Made ahead trusting `ca` (as SSL_CERT_FILE would say): the client's requests are verified by it."""

    def trusting_ca() -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        return context

    monkeypatch.setattr(network, "verifying_context", trusting_ca)
    network.start_tls()
    monkeypatch.undo()  # from here on a context would be certifi's, which does not trust `ca`
    with BasetenClient(DEFAULT_API_KEY, https_url, max_rps=1000, concurrency=2) as client:
        assert client.list_projects().status == 200
    with (
        BasetenClient(DEFAULT_API_KEY, https_url, max_rps=1000, concurrency=2) as client,
        pytest.raises(UntrustedCertificate, match="unable to get local issuer certificate"),
    ):
        client.list_projects()


def test_a_sync_over_https_archives_when_the_environment_trusts_the_certificate(
    fake: FakeBaseten,
    https_url: str,
    ca_file: Path,
    database_url: str,
    engine: Engine,
    no_trust_settings: None,
) -> None:
    env = sync_env(https_url, database_url) | {"SSL_CERT_FILE": str(ca_file)}
    result = run_archiver("sync", "--migrate", env=env)
    assert result.exit_code == 0, result.output
    served = sum(len(fake.checkpoints(job_id)) for job_id in fake.job_ids())
    assert served and scalar(engine, "SELECT count(*) FROM checkpoints") == served


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("127.0.0.1", "unable to get local issuer certificate"),  # signed by a CA certifi does not hold
        ("localhost", "Hostname mismatch, certificate is not valid for 'localhost'"),
    ],
)
def test_a_sync_over_https_stops_at_once_on_a_certificate_it_cannot_trust_and_says_why(
    host: str, said: str, https_url: str, ca_file: Path, database_url: str, engine: Engine
) -> None:
    url = https_url.replace("127.0.0.1", host)
    trust = {} if host == "127.0.0.1" else {"SSL_CERT_FILE": str(ca_file)}
    result = run_archiver("sync", "--migrate", "-vv", env=sync_env(url, database_url) | trust)
    assert result.exit_code == 1, result.output
    assert (
        "error: cannot list training projects: the API's TLS certificate was not trusted on "
        f"GET /v1/training_projects ({said}); it is checked against certifi's CA bundle, "
        "or the one SSL_CERT_FILE or SSL_CERT_DIR names"
    ) in result.output
    assert "(attempt 1)" in result.output and "(attempt 2)" not in result.output  # never retried
    assert scalar(engine, "SELECT count(*) FROM checkpoints") == 0
