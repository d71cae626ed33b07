"""Over HTTPS, Baseten's certificate is verified: trusted as the environment says, or the sync stops at once, saying why."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec, serve

from .support.commands import run_archiver, sync_env
from .support.databases import scalar

SPEC = OrgSpec(seed=3, projects=2, jobs_per_project=2, checkpoints_per_job=3)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def fake() -> FakeBaseten:
    return FakeBaseten(SPEC)


@pytest.fixture
def https_url(fake: FakeBaseten, ca: trustme.CA) -> Iterator[str]:
    """The fake API over HTTPS, its certificate (for 127.0.0.1) signed by `ca` alone."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with serve(fake, tls=context) as url:
        yield url


@pytest.fixture
def no_trust_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


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
