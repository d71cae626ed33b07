"""The way to the API: the TLS context that verifies it, the proxy the environment names for it, and the
refusals on the way that no retry can change.

Kept free of heavy imports (httpx among them): the entry point loads it first, to start the TLS context.

TLS. Making the context reads a bundle of some 150 CA certificates (certifi's, or SSL_CERT_FILE's):
25-55 ms on a 2-core machine, nearly all of it in OpenSSL, which lets go of the GIL meanwhile. The entry
point starts it on a thread of its own before a sync's imports (`start_tls`), and the sync's client takes
it (`tls_context`), ready, at no cost in wall time. Any other client makes its own when it is made. It is
the context httpx makes for `verify=True` (`httpx.create_ssl_context`): certifi's bundle, or the one
SSL_CERT_FILE or SSL_CERT_DIR names. A test compares the two.

Proxies. httpx reads the proxy variables only for a client that brings no transport of its own, and the
archiver's does (`bounds.transport`): it asks `proxy_for` which proxy, if any, to go through.
"""

from __future__ import annotations

import os
import ssl
import threading
from contextlib import suppress
from typing import TYPE_CHECKING

from archiver.errors import ProxyRefused, UntrustedCertificate, UsageError

if TYPE_CHECKING:
    from archiver.normalize import Where

# urllib, ipaddress, re, httpx and redaction are imported where they are used, by when httpx has loaded
# them: the entry point imports this module first, and starts the TLS thread the sooner.


class _Ahead(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="tls-context", daemon=True)
        self.made: ssl.SSLContext | None = None

    def run(self) -> None:
        with suppress(Exception):  # made again where it is asked for, which raises the error there
            self.made = verifying_context()


_lock = threading.Lock()
_ahead: _Ahead | None = None


def start_tls() -> None:
    """Start making a TLS context on a thread of its own, for the next `tls_context()`."""
    global _ahead
    with _lock:
        if _ahead is None:
            _ahead = _Ahead()
            _ahead.start()


def tls_context() -> ssl.SSLContext:
    """The context `start_tls` began making, once it is made; a new one when none was begun (or it failed)."""
    global _ahead
    with _lock:
        ahead, _ahead = _ahead, None
    if ahead is not None:
        ahead.join()
        if ahead.made is not None:
            return ahead.made
    return verifying_context()


def verifying_context() -> ssl.SSLContext:
    """A new context as httpx makes it for `verify=True`, trusting the environment's certificates.

    Raise UsageError when SSL_CERT_FILE names what is not a bundle that can be read.
    """
    if cafile := os.environ.get("SSL_CERT_FILE"):
        try:
            return ssl.create_default_context(cafile=cafile)
        except OSError as exc:  # missing, a directory, unreadable, or no certificate in it (ssl.SSLError)
            import re

            said = re.sub(r" \(_ssl\.c:\d+\)$", "", exc.strerror or type(exc).__name__)  # not where in C
            raise UsageError(
                f"SSL_CERT_FILE names {cafile!r}, which is not a bundle of CA certificates the archiver can "
                f"read ({said}); name a PEM file, or unset it to trust certifi's bundle"
            ) from None
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    import certifi  # httpx's dependency: its bundle is the default, and only then read

    return ssl.create_default_context(cafile=certifi.where())


def proxy_for(url: str) -> str | None:
    """The proxy to reach `url` through: the one HTTPS_PROXY, HTTP_PROXY (as `url`'s scheme) or ALL_PROXY
    names, any case, unless NO_PROXY covers its host (read as urllib and requests read them) or the host is
    this machine's loopback, which no proxy elsewhere can reach (as Go's net/http has it): the fake API."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    host = parts.hostname or ""
    if (
        not proxy
        or _loopback(host)
        or urllib.request.proxy_bypass(f"{host}:{parts.port}" if parts.port else host)
    ):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return False


def unusable_proxy(url: str) -> UsageError:
    """The error for a proxy httpx cannot use; its URL is not quoted (it may hold a password)."""
    import urllib.parse

    scheme = urllib.parse.urlsplit(url).scheme.upper()
    return UsageError(
        f"{scheme}_PROXY (or ALL_PROXY) names a proxy the archiver cannot use: it must be an http:// or "
        "https:// URL (socks5:// needs httpx's socks extra); set NO_PROXY to reach the API directly"
    )


def proxy_refused(request: str, said: str, *, status: int | None, where: Where) -> ProxyRefused:
    """The error for a proxy that would not carry `request`, in the proxy's words (`said`), masked."""
    from archiver import redaction

    said = redaction.shorten(redaction.redact(said), 80)
    return ProxyRefused(
        f"the proxy refused {request} ({said}); check the proxy that HTTPS_PROXY, HTTP_PROXY or ALL_PROXY "
        "names, and the login in it",
        status=status,
        project_id=where.project_id,
        job_id=where.job_id,
    )


def refusal(exc: BaseException, request: str, where: Where) -> UntrustedCertificate | ProxyRefused | None:
    """The error to raise at once when the transport error `exc` comes from a certificate OpenSSL would
    not trust, or from a proxy refusing a tunnel (407, or another 4xx), saying why in OpenSSL's or the
    proxy's words, never a request's headers; None for what a retry may cure."""
    import re

    import httpx

    if isinstance(exc, httpx.ProxyError) and re.match(r"4\d\d\b", str(exc)):
        return proxy_refused(request, str(exc), status=None, where=where)
    cause: BaseException | None = exc
    for _ in range(8):  # httpx's error, httpcore's, then the ssl module's
        if cause is None:
            return None
        if isinstance(cause, ssl.SSLCertVerificationError):
            said = str(cause.verify_message or cause.reason or "certificate verify failed").rstrip(".")
            return UntrustedCertificate(
                f"the API's TLS certificate was not trusted on {request} ({said}); it is checked against "
                "certifi's CA bundle, or the one SSL_CERT_FILE or SSL_CERT_DIR names",
                project_id=where.project_id,
                job_id=where.job_id,
            )
        cause = cause.__cause__ or cause.__context__
    return None
