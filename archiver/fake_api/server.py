"""Serve a `FakeBaseten` on loopback HTTP/1.1 from a `ThreadingHTTPServer`, faults included.

Each request goes to `FakeBaseten.handle`; its answer is written in one send. A "reset" fault drops
the connection with a TCP RST, a "truncate" fault promises the whole body and delivers half, and
"trickle" and "endless" faults send it in pieces with pauses (see `Response.drips`).
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from archiver.errors import UsageError
from archiver.fake_api.protocol import FakeBaseten
from archiver.fake_api.responses import DRIPPING, Response, message


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so it can close them on shutdown."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], fake: FakeBaseten, tls: ssl.SSLContext | None = None
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.scheme = "http" if tls is None else "https"
        if tls is not None:  # each connection's handshake is made as it is accepted
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    @property
    def url(self) -> str:
        """Return the base URL clients should use."""
        host, port = self.server_address[:2]
        host = str(host)
        return f"{self.scheme}://[{host}]:{port}" if ":" in host else f"{self.scheme}://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on idle keep-alive clients so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer are routine here (faults, timeouts); only real bugs deserve a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Hand each request to `FakeBaseten.handle` and write its answer in a single send."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Answers go out in one write, so Nagle would only add delayed-ACK stalls.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the fake's request records are the log."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _dispatch(self) -> None:
        """Read one request, let the fake answer it, and send the answer."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._write(message(400, "Invalid Content-Length"))
            return
        body = self.rfile.read(length) if length > 0 else b""
        fake = cast(_Server, self.server).fake
        try:
            response = fake.handle(self.command, self.path, dict(self.headers.items()), body)
        except Exception:
            traceback.print_exc()
            response = message(500, "The fake Baseten API failed; see its stderr")
        if response.fault == "reset":
            self._reset()
        elif response.fault in DRIPPING:
            self._drip(response)
        else:
            self._write(response)

    def _write(self, response: Response) -> None:
        """Send status line, headers and body in one write."""
        body = response.body
        if response.fault == "truncate":
            # Promise the whole body, deliver half, hang up: what a dying proxy looks like.
            body = body[: len(body) // 2]
            self.close_connection = True
        head = self._head(response)
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def _drip(self, response: Response) -> None:
        """Send the head, then the body in pieces with pauses, until done or the client hangs up."""
        self.close_connection = True
        if response.fault == "slow-headers":
            head = Response(
                response.status, response.headers, self._head(response), "trickle", response.drip_s
            )
            for piece in head.drips():
                self.wfile.write(piece)
            self.wfile.write(response.body)
            return
        self.wfile.write(self._head(response))
        chunked = response.fault == "endless"
        for piece in response.drips():
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _head(self, response: Response) -> bytes:
        phrase = (
            HTTPStatus(response.status).phrase
            if response.status in HTTPStatus._value2member_map_
            else "Other"
        )
        lines = [f"HTTP/1.1 {response.status} {phrase}"]
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        if not any(name.lower() == "date" for name in response.headers):  # as every HTTP server does
            lines.append(f"Date: {self.date_time_string()}")
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _reset(self) -> None:
        """Drop the connection with a TCP RST and no answer."""
        self.close_connection = True
        with suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


@contextmanager
def serve(
    fake: FakeBaseten, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """Serve `fake` from a background thread and yield its base URL; stop it on exit.

    With `tls`, a server-side context holding a certificate, over HTTPS.
    """
    server = _Server((host, port), fake, tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()


def serve_forever(
    fake: FakeBaseten,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `fake` in the foreground until interrupted, calling `ready(url)` once listening."""
    try:
        server = _Server((host, port), fake)
    except OSError as exc:  # the port taken, the host unknown or not ours
        raise UsageError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    try:
        if ready is not None:
            ready(server.url)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.close_connections()
        server.server_close()
