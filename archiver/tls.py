"""The TLS context the API client verifies Baseten's certificate with, made while the command line loads.

Making it reads a bundle of some 150 CA certificates (certifi's, or SSL_CERT_FILE's): 25-55 ms on a
2-core machine, nearly all of it in OpenSSL, which lets go of the GIL meanwhile. The entry point
starts it on a thread of its own before a sync's imports (`start`), and the sync's client takes it
(`context`), ready, at no cost in wall time. Any other client makes its own when it is made.

The context is the one httpx makes for `verify=True` (`httpx.create_ssl_context`): certifi's bundle,
or the one SSL_CERT_FILE or SSL_CERT_DIR names. Only `ssl` and `certifi` are imported here, not
httpx: the thread must not race the command line for httpx's modules. A test compares the two.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
from contextlib import suppress

from archiver.errors import UsageError


class _Ahead(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="tls-context", daemon=True)
        self.made: ssl.SSLContext | None = None

    def run(self) -> None:
        with suppress(Exception):  # made again where it is asked for, which raises the error there
            self.made = verifying_context()


_lock = threading.Lock()
_ahead: _Ahead | None = None


def start() -> None:
    """Start making a context on a thread of its own, for the next `context()`."""
    global _ahead
    with _lock:
        if _ahead is None:
            _ahead = _Ahead()
            _ahead.start()


def context() -> ssl.SSLContext:
    """The context `start` began making, once it is made; a new one when none was begun (or it failed)."""
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
    import certifi  # httpx's dependency: its bundle is the default

    if cafile := os.environ.get("SSL_CERT_FILE"):
        try:
            return ssl.create_default_context(cafile=cafile)
        except OSError as exc:  # missing, a directory, unreadable, or no certificate in it (ssl.SSLError)
            said = re.sub(r" \(_ssl\.c:\d+\)$", "", exc.strerror or type(exc).__name__)  # not where in C
            raise UsageError(
                f"SSL_CERT_FILE names {cafile!r}, which is not a bundle of CA certificates the archiver can "
                f"read ({said}); name a PEM file, or unset it to trust certifi's bundle"
            ) from None
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context(cafile=certifi.where())
