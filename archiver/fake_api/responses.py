"""Answers of the fake API: the `Response` every layer passes on, and the shapes Baseten's errors take."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

RATE_LIMIT_MESSAGE = "Rate limit exceeded. Please try again later."

JSON = "application/json"
HTML = "text/html; charset=utf-8"
HTML_ERROR = b"<html><head><title>%d</title></head><body><h1>%d %s</h1></body></html>\n"
DRIPPING = ("trickle", "endless", "slow-headers")
DRIP_FOR_AT_MOST_S = 300.0  # a dripping answer hangs up after this: the fake never runs on forever


@dataclass(frozen=True)
class Response:
    """An HTTP answer; `fault` tells the transport to "reset", "truncate" or "timeout" instead of answering
    cleanly, or to send the body dripping: "trickle" (a byte each `drip_s`) or "endless" (chunked, the
    body again and again, a chunk each `drip_s`); "slow-headers" sends the head a byte each `drip_s`."""

    status: int
    headers: dict[str, str]
    body: bytes
    fault: str | None = None
    drip_s: float = 0.2

    def dripped(self, fault: str, drip_s: float = 0.2) -> Response:
        """This answer sent as a "trickle" or an "endless" body."""
        headers = dict(self.headers)
        if fault == "endless":
            headers.pop("Content-Length", None)
            headers["Transfer-Encoding"] = "chunked"
        return Response(self.status, headers, self.body, fault, drip_s)

    def drips(self) -> Iterator[bytes]:
        """The pieces of a dripping body, each after a pause of `drip_s`, for DRIP_FOR_AT_MOST_S at most."""
        pieces = self.body if self.fault == "trickle" else iter(lambda: self.body, b"")
        give_up_at = time.monotonic() + DRIP_FOR_AT_MOST_S
        for piece in pieces:
            if time.monotonic() > give_up_at:
                return
            time.sleep(self.drip_s)
            yield bytes([piece]) if isinstance(piece, int) else piece

    @classmethod
    def of(
        cls,
        status: int,
        body: Any = b"",
        *,
        content_type: str = JSON,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Build an answer: bytes go out as given, anything else encoded as JSON."""
        encoded = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        standard = {"Content-Type": content_type, "Content-Length": str(len(encoded))}
        return cls(status, {**standard, **(headers or {})}, encoded)

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body)


def message(status: int, text: str) -> Response:
    """Answer with the `{"message": ...}` error shape the Baseten API uses for 4xx."""
    return Response.of(status, {"message": text})


def html_error(status: int) -> Response:
    """Answer the way a load balancer does: an HTML page, not JSON."""
    phrase = HTTPStatus(status).phrase.encode()
    return Response.of(status, HTML_ERROR % (status, status, phrase), content_type=HTML)


def too_many_requests(retry_after: int, *, header: bool) -> Response:
    """Answer 429 in the documented shape, with or without a Retry-After header."""
    headers = {"Retry-After": str(retry_after)} if header else None
    return Response.of(429, {"error": RATE_LIMIT_MESSAGE, "retry_after": retry_after}, headers=headers)
