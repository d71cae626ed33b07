"""One try of a request, bounded: a single deadline and a size limit that nothing a server sends escapes.

httpx's timeouts are per operation: each byte of a header sent every half second starts the read
timeout again, and a body that trickles never times out. So every socket operation of a try is
given what is left of the try's deadline (`deadline`, read by the connection pool's network
backend, `DeadlineBackend`), from connecting to the body's last byte.

A try may also be held right before its first byte is written, once connected (`send`'s `turn`:
the rate limiter's, `RateLimiter.on_the_wire`), so that requests held back on the way by the GIL or
the connection pool do not reach the API bunched. That wait is not part of the try: its deadline
moves by as long.

The size limit counts the body as decoded: a gzip bomb of 0.75 MiB on the wire is 768 MiB of
spaces. Bodies are decompressed here, a bounded piece at a time, instead of by httpx (which
inflates each piece whole), and the try stops the moment the decoded size passes the limit.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import httpcore
import httpx

from archiver import network

# The encodings the client asks for and can decode within the limit (httpx would also offer br and
# zstd when their packages happen to be installed; their decoders cannot be bounded here).
ACCEPT_ENCODING = "gzip, deflate"
_PIECE = 1024 * 1024  # the most one step of decompression produces

_local = threading.local()


class TooSlow(httpx.TimeoutException):
    """A try that did not end (connected, headers and body whole) within its deadline."""


class TooLarge(Exception):
    """More bytes, as decoded, than the limit."""


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Give every socket operation on this thread until `at` (time.monotonic) to finish."""
    before = getattr(_local, "deadline", None)
    _local.deadline = at
    try:
        yield
    finally:
        _local.deadline = before


@contextlib.contextmanager
def _turn(turn: Callable[[], None] | None) -> Iterator[None]:
    """Have this thread's next request call `turn` right before its first byte is written."""
    _local.turn = turn
    try:
        yield
    finally:
        _local.turn = None


def _take_turn() -> None:
    """Call the turn this thread's request has still to take, if any; move its deadline by the wait."""
    turn: Callable[[], None] | None = getattr(_local, "turn", None)
    if turn is None:
        return
    _local.turn = None  # once a request: its later writes (the rest of it) are part of the same start
    began = time.monotonic()
    turn()
    if getattr(_local, "deadline", None) is not None:
        _local.deadline += time.monotonic() - began


def _remaining(timeout: float | None, kind: type[Exception]) -> float | None:
    """`timeout`, shortened to what is left of this thread's deadline; raise `kind` when nothing is."""
    at: float | None = getattr(_local, "deadline", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise kind("the try's deadline passed (--timeout)")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _take_turn()
        self._stream.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        tls = self._stream.start_tls(
            ssl_context, server_hostname, _remaining(timeout, httpcore.ConnectTimeout)
        )
        return _Stream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """The default network backend, each operation bounded by the deadline of the try it serves."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        return _Stream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        return _Stream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def transport(limits: httpx.Limits, url: str) -> httpx.HTTPTransport:
    """httpx's transport to `url` with every socket operation under the try's deadline, verifying
    certificates as httpx does (`network.tls_context`: made ahead, on a sync), through the proxy the
    environment names for it (`network.proxy_for`)."""
    context, proxy = network.tls_context(), network.proxy_for(url)
    try:
        # An https:// proxy's own certificate is verified with the API's context: httpcore would make one
        # of its own for each connection to the proxy, reading certifi's bundle again (25-55 ms each).
        through = None
        if proxy is not None:
            through = httpx.Proxy(proxy, ssl_context=context if proxy.startswith("https://") else None)
        made = httpx.HTTPTransport(limits=limits, verify=context, proxy=through)
    except (ValueError, ImportError):  # httpx's message quotes the proxy's URL, and its password
        raise network.unusable_proxy(url) from None
    pool = getattr(made, "_pool", None)
    if not isinstance(getattr(pool, "_network_backend", None), httpcore.NetworkBackend):
        # Without it a server could hold a try open a byte at a time: refuse to run unbounded.
        raise RuntimeError("this httpx/httpcore version does not let the archiver bound a request's time")
    pool._network_backend = DeadlineBackend(pool._network_backend)  # type: ignore[union-attr]
    return made


# Where `send` leaves a successful body larger than its `spill`: in `response.extensions`.
SPILLED = "archiver.spilled"


def send(
    transport: httpx.BaseTransport,
    request: httpx.Request,
    at: float,
    limit: int,
    spill: int | None = None,
    turn: Callable[[], None] | None = None,
) -> httpx.Response:
    """Send `request` and read its whole body by time `at` (time.monotonic), within `limit` bytes as decoded.

    With `turn`, the request calls it once connected, right before its first byte is written: it may
    wait (`at` then moves by as long) or raise, and the request is not sent. Only a transport made by
    `transport()` writes through here; with another one (a test's), `turn` is never called.

    The response returned holds the decoded body; its headers no longer name an encoding or a
    length on the wire. With `spill`, a successful body of more than `spill` bytes is not held
    in memory: it is left in a temporary file, `spilled(response)`, and the content is empty.
    Raise TooLarge (saying how it was found), TooSlow, or what httpx raises.
    """
    with deadline(at), _turn(turn):
        response = transport.handle_request(request)
        try:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise TooLarge(f"it announces {int(declared):,} bytes")
            spooled = spill is not None and response.is_success
            # Left open when it holds the body: the caller reads it and closes it.
            sink = tempfile.SpooledTemporaryFile(max_size=spill or 0) if spooled else None  # noqa: SIM115
            body = read(response, _local.deadline, limit, sink)  # `at`, moved by the turn's wait
        finally:
            response.close()
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name not in ("content-encoding", "content-length")
    ]
    extensions: dict[str, Any] = {}
    if sink is not None:
        size = sink.tell()
        sink.seek(0)
        if size > (spill or 0):
            extensions[SPILLED] = sink
        else:
            body = sink.read()
            sink.close()
    return httpx.Response(
        response.status_code, headers=headers, content=body, request=request, extensions=extensions
    )


def spilled(response: httpx.Response) -> IO[bytes] | None:
    """The file `send` left a large body in (read from its start), or None when the body is the content."""
    found: IO[bytes] | None = response.extensions.get(SPILLED)
    return found


def read(response: httpx.Response, at: float, limit: int, sink: IO[bytes] | None = None) -> bytes:
    """The body of a streamed response, decoded, by time `at` and within `limit` bytes as decoded.

    With `sink`, the body is written there instead, and nothing is returned.
    """
    decoder = _decoder(response.headers.get("Content-Encoding", ""))
    pieces: list[bytes] = []
    keep: Callable[[bytes], object] = pieces.append if sink is None else sink.write
    wire = size = 0
    # The stream itself, not `iter_raw`: a response a test transport made in memory is already
    # read, and its stream can be iterated again.
    stream = response.stream
    assert isinstance(stream, httpx.SyncByteStream)
    for raw in stream:
        wire += len(raw)
        if wire > limit:
            raise TooLarge(f"more than {limit:,} bytes arrived")
        for piece in decoder.feed(raw, limit - size):
            size += len(piece)
            if size > limit:
                raise TooLarge(f"more than {limit:,} bytes arrived")
            keep(piece)
        if time.monotonic() > at:
            raise TooSlow("the response did not arrive whole in time")
    for piece in decoder.flush(limit - size):
        size += len(piece)
        if size > limit:
            raise TooLarge(f"more than {limit:,} bytes arrived")
        keep(piece)
    return b"".join(pieces)


class _Identity:
    def feed(self, data: bytes, room: int) -> Iterator[bytes]:
        yield data

    def flush(self, room: int) -> Iterator[bytes]:
        yield from ()


class _Inflate:
    """zlib, gzip or raw deflate, inflated at most a piece at a time and never far past `room`."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._zlib = zlib.decompressobj(wbits)
        self._started = False

    def feed(self, data: bytes, room: int) -> Iterator[bytes]:
        try:
            yield from self._inflate(data, room)
        except zlib.error as exc:
            if self._started or self._wbits != zlib.MAX_WBITS:
                raise httpx.DecodingError(f"the body cannot be decompressed: {exc}") from None
            # `deflate` sent as raw deflate, without zlib's header, as some servers do
            self._zlib, self._wbits = zlib.decompressobj(-zlib.MAX_WBITS), -zlib.MAX_WBITS
            yield from self.feed(data, room)

    def _inflate(self, data: bytes, room: int) -> Iterator[bytes]:
        while data:
            piece = self._zlib.decompress(data, max(1, min(_PIECE, room + 1)))
            self._started = True
            room -= len(piece)
            yield piece
            if room < 0:
                return
            data = self._zlib.unconsumed_tail

    def flush(self, room: int) -> Iterator[bytes]:
        try:
            yield self._zlib.flush()
        except zlib.error as exc:
            raise httpx.DecodingError(f"the body cannot be decompressed: {exc}") from None


def _decoder(encoding: str) -> _Identity | _Inflate:
    codings = [coding.strip().lower() for coding in encoding.split(",") if coding.strip()]
    if not codings or codings == ["identity"]:
        return _Identity()
    if codings in (["gzip"], ["x-gzip"]):
        return _Inflate(zlib.MAX_WBITS | 16)
    if codings == ["deflate"]:
        return _Inflate(zlib.MAX_WBITS)
    raise httpx.DecodingError(
        f"the body is encoded as {encoding[:40]!r}, which the archiver does not ask for ({ACCEPT_ENCODING})"
    )
