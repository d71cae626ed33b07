"""One answer the archiver used, as it is kept: request, status, body with the key masked, and the few
headers it acts on. Everything a server may echo anything into passes through here once (`of`).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, replace
from typing import IO, Any

import httpx

from archiver import bounds, redaction
from archiver.errors import MalformedResponse
from archiver.normalize import Where

# The response headers an archive keeps beside a body (besides its media type): what the archiver
# acts on. Every other header is dropped, as a server may echo anything in one.
KEPT_HEADERS = ("Date", "Link")
# How kept bodies are compressed (`responses.Kept`, and `_scan` for a spilled one): zlib's best, about
# as fast as its default on these bodies and 6% smaller (27.9 stored bytes a checkpoint against 29.6
# on the benchmark's organisation of 47,247 checkpoints).
ZLIB_LEVEL = 9


@dataclass(frozen=True)
class Withheld:
    """A body not kept because it is in no encoding JSON allows: what is kept is its hash, size and why."""

    reason: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Spilled:
    """A large body left on disk (`bounds.send`), scanned once: read as a stream, never whole in memory.

    It is valid UTF-8 and holds no secret, nor any escape a streaming parser reads differently
    from `json` (a lone surrogate); its hash, size and compressed copy were made in the same pass.
    """

    file: IO[bytes]
    sha256: str
    size_bytes: int
    compressed: bytes


@dataclass(frozen=True)
class ApiResponse:
    """One answer the archiver used: the request, the status and the body as received (the key masked)."""

    method: str
    path: str
    status: int
    body: bytes
    request_body: bytes
    where: Where
    content_type: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # those of KEPT_HEADERS it had, masked
    withheld: Withheld | None = None  # a body that could not be scanned for secrets: not kept
    spilled: Spilled | None = None  # a large body, on disk: `body` is empty

    @property
    def link(self) -> str:
        """The `Link` header: a `rel="next"` in it says the listing has another page."""
        return dict(self.headers).get("Link", "")

    def read_whole(self) -> ApiResponse:
        """This response with a spilled body read into memory."""
        if self.spilled is None:
            return self
        return replace(self, body=_drained(self.spilled.file), spilled=None)

    def json(self) -> Any:
        """The body as JSON; raise MalformedResponse, naming where, when it is not."""
        if self.withheld is not None:
            raise MalformedResponse(
                f"the response cannot be read as JSON text: {self.withheld.reason}",
                project_id=self.where.project_id,
                job_id=self.where.job_id,
            )
        try:
            # NaN and Infinity are Python's extensions, not JSON; PostgreSQL's jsonb refuses them.
            return json.loads(self.body, parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            kind = self.content_type or "no content type"
            raise MalformedResponse(
                f"response is not valid JSON ({kind}, {len(self.body)} bytes): {exc}",
                project_id=self.where.project_id,
                job_id=self.where.job_id,
            ) from None


def of(response: httpx.Response, where: Where) -> ApiResponse:
    """Keep an answer as the archive stores it: its request, status, body (secrets masked) and paging."""
    request = response.request
    body, withheld, spilled = response.content, None, None
    if (file := bounds.spilled(response)) is not None:
        spilled = _scan(file)
        if spilled is None:  # anything unusual in it: read whole, as a small body is
            body = _drained(file)
    if spilled is None:
        try:
            body = redaction.redact_body(body)
        except redaction.Undecodable as exc:
            withheld = Withheld(f"{exc}, so it was not kept", hashlib.sha256(body).hexdigest(), len(body))
            body = b""
    headers = response.headers
    return ApiResponse(
        request.method,
        request.url.raw_path.decode("ascii"),
        response.status_code,
        body,
        request.content,
        where,
        media_type(headers.get("Content-Type", "")),
        tuple((name, redaction.redact(headers[name])) for name in KEPT_HEADERS if name in headers),
        withheld,
        spilled,
    )


def _drained(file: IO[bytes]) -> bytes:
    """All a spilled file holds; the file is closed (and so removed)."""
    with file:
        file.seek(0)
        return file.read()


_SCAN_PIECE = 1024 * 1024
# Longer than any spelling of MIN_LENGTH characters of a secret, or of an escape: what a piece
# carries over from the one before, so that nothing is missed where two pieces meet.
_OVERLAP = 8 * redaction.MIN_LENGTH * 2
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _scan(file: IO[bytes]) -> Spilled | None:
    """Read a spilled body once: hash and compress it, and make sure it can be parsed as a stream.

    None when it cannot: not plain UTF-8 (another encoding, a byte order mark, an invalid byte),
    a secret in it (it must be masked), or an escaped surrogate (a streaming parser would read a
    lone one as "?" where `json` keeps it for the contract to refuse).
    """
    digest, packer = hashlib.sha256(), zlib.compressobj(ZLIB_LEVEL)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    compressed: list[bytes] = []
    size, tail = 0, b""
    while piece := file.read(_SCAN_PIECE):
        if not size and (piece.startswith(codecs.BOM_UTF8) or redaction.encoding_of(piece) != "utf-8"):
            return None
        window = tail + piece
        try:
            utf8.decode(piece)
        except UnicodeDecodeError:
            return None
        if redaction.holds_secret(window) or _SURROGATE.search(window):
            return None
        digest.update(piece)
        compressed.append(packer.compress(piece))
        size += len(piece)
        tail = window[-_OVERLAP:]
    try:
        utf8.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    compressed.append(packer.flush())
    file.seek(0)
    return Spilled(file, digest.hexdigest(), size, b"".join(compressed))


_MEDIA_TYPE = re.compile(r"\s*([A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64})\s*(?:;|$)")
_CHARSET = re.compile(r";\s*charset=\"?([A-Za-z0-9._:-]{1,40})\"?\s*(?:;|$)", re.IGNORECASE)


def media_type(header: str) -> str:
    """What the archive keeps of a Content-Type: the media type and its charset, nothing a server echoed beside them.

    A server may put anything in a header, the key included: only these two are kept, and masked too.
    """
    if (kind := _MEDIA_TYPE.match(header)) is None:
        return ""
    charset = _CHARSET.search(header, kind.end(1))
    kept = redaction.redact(kind[1]) + (f"; charset={charset[1]}" if charset else "")
    return redaction.redact(kept).lower()


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")
