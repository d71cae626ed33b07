"""A forwarding HTTP proxy on loopback, as a corporate network puts between the archiver and the API."""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Hop-by-hop: a proxy answers for these itself.
_OWN = {"connection", "proxy-connection", "proxy-authorization", "keep-alive", "transfer-encoding", "host"}


@dataclass
class Seen:
    """What the proxy was asked: each request's method and absolute URL (or a tunnel's host:port), and its
    Proxy-Authorization."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Proxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_CONNECT(self) -> None:
        """A tunnel to host:port (HTTPS through the proxy): bytes both ways until either side hangs up."""
        if not self._admitted():
            return
        host, _, port = self.path.rpartition(":")
        with socket.create_connection((self.server.address_of(host), int(port)), timeout=30) as upstream:
            self.send_response(200, "Connection established")
            self.end_headers()
            sockets = [self.connection, upstream]
            while True:
                ready, _, _ = select.select(sockets, [], [], 30)
                if not ready:
                    break
                for each in ready:
                    data = each.recv(65536)
                    if not data:
                        return
                    (upstream if each is self.connection else self.connection).sendall(data)
        self.close_connection = True

    def _admitted(self) -> bool:
        """Record the request; answer 407 and say False when it lacks the login the proxy wants."""
        given = self.headers.get("Proxy-Authorization")
        with self.server.lock:
            self.server.seen.requests.append((self.command, self.path))
            self.server.seen.authorizations.append(given)
        if self.server.login is None or given == self.server.login:
            return True
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(407, "Proxy Authentication Required")
        self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def _forward(self) -> None:
        if not self._admitted():
            return
        target = urllib.parse.urlsplit(self.path)  # absolute-form, as clients ask a proxy
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(
            self.server.address_of(target.hostname or ""), target.port, timeout=30
        )
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _OWN}
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()  # as sent: a compressed body stays compressed
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in _OWN and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hosts: dict[str, str], login: str | None, tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        if tls is not None:  # an https:// proxy: the client speaks TLS to the proxy itself
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.seen = Seen()
        self.lock = threading.Lock()
        self._hosts = hosts
        self.login = login

    def address_of(self, host: str) -> str:
        return self._hosts.get(host, host)


@contextmanager
def forwarding_proxy(
    hosts: dict[str, str] | None = None, login: str | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[str, Seen]]:
    """Run a proxy; yield its URL and what it is asked. `hosts` are names only it knows (host to address):
    a client that asked for one without the proxy would not find it. With `login` (a Proxy-Authorization
    value), a request without it is answered 407. With `tls` (a server context), an https:// proxy."""
    proxy = _Proxy(hosts or {}, login, tls)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        scheme = "http" if tls is None else "https"
        yield f"{scheme}://127.0.0.1:{proxy.server_address[1]}", proxy.seen
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
