"""An httpx transport that hands requests to a `FakeBaseten` in-process: the same protocol, no socket.

Faults become what httpx raises over a real connection: a reset is a `ReadError`, a body cut short
a `RemoteProtocolError` once half of it has been read, an answer later than the client's read
timeout a `ReadTimeout` (the fake sleeps only as long as the client would have waited); a dripping
body comes in pieces with pauses between them, for as long as the client reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import httpx

from archiver.fake_api.responses import DRIPPING, Response


class Handler(Protocol):
    """What the transport needs of a fake: `FakeBaseten.handle`, the whole API without sockets."""

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        read_timeout_s: float | None = None,
    ) -> Response: ...


class FakeTransport(httpx.BaseTransport):
    """Answer httpx requests from a fake, as `httpx.MockTransport` would from a handler."""

    def __init__(self, fake: Handler) -> None:
        self._fake = fake

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        answer = self._fake.handle(
            request.method,
            request.url.raw_path.decode("ascii"),
            dict(request.headers.items()),
            request.read(),
            read_timeout_s=timeouts.get("read"),
        )
        if answer.fault == "reset":
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        if answer.fault == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        body = b"" if request.method == "HEAD" else answer.body
        stream: httpx.SyncByteStream = (
            _CutShort(body) if answer.fault == "truncate" else httpx.ByteStream(body)
        )
        if answer.fault in DRIPPING:
            stream = _Dripping(answer)
        return httpx.Response(answer.status, headers=answer.headers, stream=stream, request=request)


class _Dripping(httpx.SyncByteStream):
    """A body that trickles, or never ends: pieces with pauses between them, for as long as it is read."""

    def __init__(self, answer: Response) -> None:
        self._answer = answer

    def __iter__(self) -> Iterator[bytes]:
        yield from self._answer.drips()


class _CutShort(httpx.SyncByteStream):
    """Half of a promised body, then the connection drops."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        half = self._body[: len(self._body) // 2]
        yield half
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body "
            f"(received {len(half)} bytes, expected {len(self._body)})"
        )
