"""What leaves the process: secrets masked, values echoed from responses shortened, in one place.

The API key is registered when the client is made (`register`); from then on it is masked in
response bodies before they are parsed or kept (`redact_body`), in the few response headers that
are kept, in error messages before they are stored or printed (`redact`), and in every log record
(`RedactingFilter`, installed on the handlers by `archiver.logs`). Masking the bodies at the source
keeps the key out of what is derived from them too: rows, messages, stored responses. The database
password never gets this far: `db.redact` masks it in every URL shown.

A server may echo the key in any spelling, so what is masked is any run of `MIN_LENGTH` or more
of its characters, in upper or lower case, each character as itself, as a JSON escape (`\\u0041`,
`\\/`) or percent-encoded (`%41`). A body is read in the encoding JSON allows it (UTF-8, UTF-16 or
UTF-32, with or without a byte order mark) and masked in that encoding; one that decodes in none
of them cannot be scanned, so it is not kept at all (`Undecodable`).
"""

from __future__ import annotations

import bisect
import codecs
import logging
import re
import threading
from typing import Any, NamedTuple

MASK = "<api key>"
# A secret this short cannot be told apart from data: masking "k" would rewrite every word. It is
# also the shortest run of a secret's characters that is masked.
MIN_LENGTH = 8
# How much of a value taken from a response an error message quotes.
QUOTED_CHARS = 80

_BLOCK = MIN_LENGTH // 2


class _Lookup(NamedTuple):
    """What a text is searched for, replaced whole when a secret is registered."""

    # Every run of MIN_LENGTH characters of every secret, lower-cased: a longer run is the union of these.
    grams: frozenset[bytes]
    # Each such run holds one of its secret's pieces of _BLOCK characters that start at a multiple of
    # _BLOCK (2 * _BLOCK - 1 <= MIN_LENGTH). A text is searched for those pieces, fewer than the runs
    # (10 against 36 for a key of 43 characters), and where one is, for the runs around it.
    blocks: frozenset[bytes]
    # Whether no secret holds a character JSON's two-character escapes spell (`\n`, `\/`, ...) or
    # the byte `_blanked` puts in their place: then those escapes need not be read (`_blanked`).
    short_escapes_blank: bool = True


_secrets: frozenset[str] = frozenset()
_lookup = _Lookup(frozenset(), frozenset())
_registering = threading.Lock()

# The spellings of one character other than itself: JSON escapes and percent-encoding.
_SHORT_ESCAPE = re.compile(rb'\\["\\/bfnrt]')  # JSON's two-character escapes
_ESCAPE = re.compile(rb"\\u[0-9A-Fa-f]{4}|" + _SHORT_ESCAPE.pattern + rb"|%[0-9A-Fa-f]{2}")
_SIMPLE_ESCAPES = {b'"': 34, b"\\": 92, b"/": 47, b"b": 8, b"f": 12, b"n": 10, b"r": 13, b"t": 9}
_BLANK = b"\x00\x00"  # what `_blanked` puts in place of a two-character escape
_SPELLED_SHORT = (0, *_SIMPLE_ESCAPES.values())  # the characters those escapes spell, and NUL
_NOT_ASCII = 0  # what an escape of a character a key cannot hold reads as


class Undecodable(ValueError):
    """A body in none of the encodings JSON allows: it cannot be scanned for secrets, so it is not kept."""


def register(secret: str) -> None:
    """Mask `secret` in everything the process writes from now on (a short one is not maskable)."""
    global _secrets, _lookup
    if len(secret) >= MIN_LENGTH and secret not in _secrets:
        lowered = secret.lower().encode("utf-8", "surrogatepass")
        with _registering:
            _secrets = _secrets | {secret}
            grams = {lowered[i : i + MIN_LENGTH] for i in range(len(lowered) - MIN_LENGTH + 1)}
            blocks = {lowered[i : i + _BLOCK] for i in range(0, len(lowered) - _BLOCK + 1, _BLOCK)}
            blank = _lookup.short_escapes_blank and not any(chr(c) in secret for c in _SPELLED_SHORT)
            _lookup = _Lookup(_lookup.grams | grams, _lookup.blocks | blocks, blank)


def redact(text: str) -> str:
    """Mask every registered secret in `text`, in any of the spellings `redact_body` masks."""
    if not _lookup.grams:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    masked = _mask(raw)
    return text if masked is raw else masked.decode("utf-8", "surrogatepass")


def redact_body(body: bytes) -> bytes:
    """Mask every registered secret in a response body, in the encoding it came in; raise Undecodable
    when it is in none that JSON allows. Apart from the masks the body stays byte for byte as received."""
    bom, codec = _encoding(body)
    if codec == "utf-8":
        try:
            body.decode("utf-8")  # valid, or nothing is known of what it says
        except UnicodeDecodeError as exc:
            raise Undecodable(f"it is not valid UTF-8 (byte {exc.start})") from None
        return _mask(body)
    try:
        text = body[len(bom) :].decode(codec)
    except UnicodeDecodeError as exc:
        raise Undecodable(f"it is not valid {codec.upper()} (byte {exc.start + len(bom)})") from None
    masked = redact(text)
    return body if masked == text else bom + masked.encode(codec)


def holds_secret(raw: bytes) -> bool:
    """Whether UTF-8 bytes hold a run of a registered secret's characters in any spelling `redact_body` masks."""
    return _mask(raw) is not raw


def encoding_of(body: bytes) -> str:
    """The codec of a JSON body, from its first bytes (see `_encoding`)."""
    return _encoding(body)[1]


def text_of(body: bytes) -> str:
    """A body as text, in the encoding JSON allows it, any byte that does not decode replaced."""
    bom, codec = _encoding(body)
    return body[len(bom) :].decode(codec, errors="replace")


def _encoding(body: bytes) -> tuple[bytes, str]:
    """The byte order mark and codec of a JSON body, as RFC 8259 and Python's `json` detect them."""
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16's, which it starts with
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if body.startswith(bom):
            return bom, codec
    # JSON text starts with an ASCII character: the zero bytes around it give the encoding away.
    if len(body) >= 4 and not body[0] and not body[1] and not body[2]:
        return b"", "utf-32-be"
    if len(body) >= 4 and body[0] and not body[1] and not body[2] and not body[3]:
        return b"", "utf-32-le"
    if len(body) >= 2 and not body[0]:
        return b"", "utf-16-be"
    if len(body) >= 2 and not body[1]:
        return b"", "utf-16-le"
    return b"", "utf-8"


def _mask(raw: bytes) -> bytes:
    """`raw` (ASCII-compatible) with every run of a secret's characters masked; `raw` itself when none."""
    grams, blocks, short_escapes_blank = _lookup
    if not grams:
        return raw
    escapes: list[re.Match[bytes]] = []
    if b"\\" not in raw and b"%" not in raw:
        view = raw.lower()
    elif short_escapes_blank and (blanked := _blanked(raw)) is not None:
        view = blanked.lower()  # the same places as `raw`: no escape is read
    else:
        escapes = list(_ESCAPE.finditer(raw))
        view = _unescaped(raw, escapes).lower()
    spans: list[tuple[int, int]] = []
    for block in blocks:
        at = view.find(block)
        while at >= 0:
            for start in range(max(at - _BLOCK + 1, 0), at + 1):  # the runs that hold it there
                if view[start : start + MIN_LENGTH] in grams:
                    spans.append((start, start + MIN_LENGTH))
            at = view.find(block, at + 1)
    if not spans:
        return raw
    to_raw = _Positions(escapes)
    pieces, done = [], 0
    for start, end in _merged(spans):
        first, last = to_raw.start(start), to_raw.end(end - 1)
        pieces += [raw[done:first], MASK.encode()]
        done = last
    pieces.append(raw[done:])
    return b"".join(pieces)


def _blanked(raw: bytes) -> bytes | None:
    """`raw` with each two-character escape (`\\\\`, `\\"`, `\\/`, `\\n`, ...) made two NUL bytes; None
    when it holds an escape that may spell a secret's character (`\\u0041`, `%41`).

    When no secret holds a character those escapes spell (`short_escapes_blank`), no run of a secret's
    characters goes through one, in the text as JSON reads it or in the blanked bytes, and every other
    byte is where it was: the runs found in them are the runs `_unescaped` would show, at the places
    of `raw`. A listing whose LoRA configs name their modules by a regular expression (`.*\\\\.`) is
    masked in about half the time it took to read every escape (58 against 110 µs for 15 kB).
    """
    if b"%" in raw:
        return None
    blanked = _SHORT_ESCAPE.sub(_BLANK, raw)  # from the left, as JSON reads them: `\\n` is `\\` and `n`
    return None if b"\\u" in blanked else blanked


def _unescaped(raw: bytes, escapes: list[re.Match[bytes]]) -> bytes:
    """`raw` with each escape read as the one character it spells (a byte each: a key is ASCII)."""
    pieces, done = [], 0
    for escape in escapes:
        pieces += [raw[done : escape.start()], bytes([_spelled(escape[0])])]
        done = escape.end()
    pieces.append(raw[done:])
    return b"".join(pieces)


def _spelled(escape: bytes) -> int:
    if escape.startswith(b"%"):
        return int(escape[1:], 16)
    if escape.startswith(b"\\u"):
        code = int(escape[2:], 16)
        return code if code < 128 else _NOT_ASCII
    return _SIMPLE_ESCAPES[escape[1:]]


class _Positions:
    """Where a character of the unescaped view is in the raw text: escapes are several bytes, one character."""

    def __init__(self, escapes: list[re.Match[bytes]]) -> None:
        self._view_starts: list[int] = []  # where each escape is in the view
        self._raw: list[tuple[int, int]] = []  # and in the raw text
        shrink = 0
        for escape in escapes:
            self._view_starts.append(escape.start() - shrink)
            self._raw.append(escape.span())
            shrink += escape.end() - escape.start() - 1

    def _locate(self, at: int) -> tuple[int, int]:
        """The raw span of the view's character at `at`."""
        i = bisect.bisect_right(self._view_starts, at) - 1
        if i < 0:
            return at, at + 1
        view_start, (raw_start, raw_end) = self._view_starts[i], self._raw[i]
        if at == view_start:
            return raw_start, raw_end
        offset = raw_end + (at - view_start - 1)
        return offset, offset + 1

    def start(self, at: int) -> int:
        return self._locate(at)[0]

    def end(self, at: int) -> int:
        return self._locate(at)[1]


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching spans as one."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def shorten(text: str, limit: int = QUOTED_CHARS) -> str:
    """`text` cut to its first `limit` characters and an ellipsis, when longer."""
    return f"{text[:limit]}…" if len(text) > limit else text


class RedactingFilter(logging.Filter):
    """Mask registered secrets in a log record's message and in its `extra=` fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: the handler reports it, unformatted
            return True
        record.msg, record.args = redact(message), None
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in ("msg", "name", "levelname", "pathname", "filename"):
                setattr(record, name, redact(value))
        return True


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with registered secrets masked in their string values."""
    return {name: redact(value) if isinstance(value, str) else value for name, value in fields.items()}
