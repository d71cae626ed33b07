"""Certificates of the tests' own (trustme): a CA nobody else trusts, and servers it vouches for."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


def server_context(ca: trustme.CA, host: str) -> ssl.SSLContext:
    """A server-side context holding a certificate for `host` that `ca` signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(context)
    return context


def ca_file(ca: trustme.CA, directory: Path) -> Path:
    """`ca`'s certificate as a PEM file in `directory`, for SSL_CERT_FILE to name."""
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def issued(host: str, directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A new CA's certificate for `host` (its server context), and the CA's PEM file."""
    ca = trustme.CA()
    return server_context(ca, host), ca_file(ca, directory)
