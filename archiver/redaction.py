"""What leaves the process: secrets masked, values echoed from responses shortened, in one place.

The API key is registered when the client is made (`register`); from then on it is masked in
response bodies before they are parsed or kept (`redact_body`), in error messages before they
are stored or printed (`redact`), and in every log record (`RedactingFilter`, installed on the
handlers by `archiver.logs`). Masking the bodies at the source keeps the key out of what is
derived from them too: rows, messages, stored responses. The database password never gets this
far: `db.redact` masks it in every URL shown.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "<api key>"
# A secret this short cannot be told apart from data: masking "k" would rewrite every word.
MIN_LENGTH = 8
# How much of a value taken from a response an error message quotes.
QUOTED_CHARS = 80

_secrets: frozenset[str] = frozenset()
# Each secret as JSON may spell it in a body: every character as itself or as an escape.
_spellings: tuple[re.Pattern[bytes], ...] = ()
_registering = threading.Lock()


def register(secret: str) -> None:
    """Mask `secret` in everything the process writes from now on (a short one is not maskable)."""
    global _secrets, _spellings
    if len(secret) >= MIN_LENGTH and secret not in _secrets:
        with _registering:
            _secrets = _secrets | {secret}
            _spellings = (*_spellings, _json_spellings(secret))


def _json_spellings(secret: str) -> re.Pattern[bytes]:
    """A pattern for `secret` in JSON text, each character literal or escaped (`\\u002d` or `\\u002D` for `-`)."""
    characters = []
    for character in secret:
        spellings = [re.escape(character.encode())]
        if ord(character) <= 0xFFFF:  # beyond, JSON escapes a surrogate pair; a key is ASCII anyway
            digits = f"{ord(character):04x}"
            spellings.append(
                b"\\\\u" + "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in digits).encode()
            )
        if character in '"\\/':
            spellings.append(re.escape(b"\\" + character.encode()))
        characters.append(b"(?:" + b"|".join(spellings) + b")")
    return re.compile(b"".join(characters))


def redact(text: str) -> str:
    """Mask every registered secret in `text`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_body(body: bytes) -> bytes:
    """Mask every registered secret in a response body, as sent or as its JSON decodes.

    JSON may spell a character as an escape (`\\u002d` for `-`): where a body holds an escape, each
    secret is looked for in every spelling. The rest of the body stays byte for byte as received.
    """
    if b"\\" not in body:
        for secret in _secrets:
            body = body.replace(secret.encode(), MASK.encode())
        return body
    for spelled in _spellings:
        body = spelled.sub(MASK.encode(), body)
    return body


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
