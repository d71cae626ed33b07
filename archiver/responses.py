"""The API responses a run acted on, kept in the archive: nothing the API sent is ever lost.

Each response is a row of `api_responses` (its run, method, path, request body and status); its
body is stored once per distinct content in `api_response_bodies`, compressed, so a night that
sees the same answers as the last costs one small row per request. A response is kept in the
same transaction as the work it fed, so the kept responses of a run replay to exactly what it
committed, however it ended (see `archiver.rebuild`).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.answer import ZLIB_LEVEL, ApiResponse
from archiver.db import chunked, insert, upsert
from archiver.normalize import canonical_json
from archiver.schema import api_response_bodies, api_responses

ENCODING = "zlib"


@dataclass(frozen=True)
class Kept:
    """A response ready to keep: compressed and hashed where it was fetched, off the writer's thread.

    It holds the compressed body only (`response.body` is empty): a job's raw answer is often the
    largest thing in memory, and its compressed copy is a fifth of it.
    """

    response: ApiResponse
    sha256: str
    compressed: bytes
    size_bytes: int

    @classmethod
    def of(cls, response: ApiResponse) -> Kept:
        """Hash and compress a response's body (zlib releases the GIL: fetcher threads do this in parallel)."""
        body, withheld, spilled = response.body, response.withheld, response.spilled
        if withheld is not None:  # nothing of it is kept but what identifies it
            return cls(response, withheld.sha256, zlib.compress(b""), withheld.size_bytes)
        if spilled is not None:  # hashed and compressed as it was scanned (`answer.of`)
            return cls(response, spilled.sha256, spilled.compressed, spilled.size_bytes)
        return cls(
            replace(response, body=b""),
            hashlib.sha256(body).hexdigest(),
            zlib.compress(body, ZLIB_LEVEL),
            len(body),
        )


def keep(connection: Connection, run_id: int, kept: Sequence[Kept]) -> None:
    """Store responses of a run: a row each, and each body not already stored."""
    if not kept:
        return
    bodies = {k.sha256: k for k in kept}
    body_ids = _body_ids(connection, list(bodies))
    new: list[dict[str, object]] = [
        {
            "sha256": sha,
            "size_bytes": k.size_bytes,
            "encoding": ENCODING,
            "content_type": k.response.content_type or None,
            "body": k.compressed,
            "withheld": k.response.withheld.reason if k.response.withheld else None,
        }
        for sha, k in bodies.items()
        if sha not in body_ids
    ]
    if new:
        upsert(connection, api_response_bodies, new, key=["sha256"], keep=list(new[0]))
        body_ids.update(_body_ids(connection, [sha for sha in bodies if sha not in body_ids]))
    insert(
        connection,
        api_responses,
        [
            {
                "sync_run_id": run_id,
                "method": k.response.method,
                "path": k.response.path,
                "request_body": request_body(k.response.request_body),
                "status": k.response.status,
                "body_id": body_ids[k.sha256],
                "headers": canonical_json(dict(k.response.headers)) if k.response.headers else None,
            }
            for k in kept
        ],
    )


def _body_ids(connection: Connection, shas: Sequence[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    table = api_response_bodies
    for batch in chunked(shas):
        query = sa.select(table.c.sha256, table.c.id).where(table.c.sha256.in_(batch))
        ids.update({sha: id_ for sha, id_ in connection.execute(query)})
    return ids


@dataclass(frozen=True)
class Answer:
    """A kept response as the API gave it: status, body, content type and the headers kept."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]


RequestKey = tuple[str, str, str | None]  # method, path, request body


def request_body(body: bytes) -> str | None:
    """A request's body as kept and matched: JSON in one canonical spelling, whatever encoded it."""
    if not body:
        return None
    text = body.decode()
    try:
        return canonical_json(json.loads(text))
    except ValueError:
        return text


@dataclass(frozen=True)
class Corrupt:
    """A kept response whose body is not what was kept: what was asked, and what is wrong."""

    request: RequestKey
    reason: str

    def __str__(self) -> str:
        method, path, _ = self.request
        return f"the kept response to {method} {path} {self.reason}"


def of_run(connection: Connection, run_id: int) -> tuple[dict[RequestKey, Answer], list[Corrupt]]:
    """The responses a run kept, by request (for a request asked twice, the later answer), and those
    whose body no longer matches the sha256 it was kept under."""
    r, b = api_responses, api_response_bodies
    query = (
        sa.select(
            r.c.method,
            r.c.path,
            r.c.request_body,
            r.c.status,
            r.c.headers,
            b.c.withheld,
            b.c.encoding,
            b.c.content_type,
            b.c.body,
            b.c.sha256,
        )
        .join(b, b.c.id == r.c.body_id)
        .where(r.c.sync_run_id == run_id)
        .order_by(r.c.id)
    )
    answers: dict[RequestKey, Answer] = {}
    corrupt: list[Corrupt] = []
    for (
        method,
        path,
        request_body,
        status,
        headers,
        withheld,
        encoding,
        content_type,
        body,
        sha256,
    ) in connection.execute(query):
        key = (method, path, request_body)
        kept_headers = _headers(headers)
        if withheld is not None:  # never kept: the replay fails it as the run did
            answers[key] = Answer(status, b"", content_type or "", kept_headers)
            continue
        if encoding != ENCODING:
            corrupt.append(Corrupt(key, f"is encoded as {encoding!r}, which this archiver cannot read"))
            continue
        try:
            raw = zlib.decompress(body)
        except zlib.error as exc:
            corrupt.append(Corrupt(key, f"cannot be decompressed ({exc})"))
            continue
        if hashlib.sha256(raw).hexdigest() != sha256:
            corrupt.append(Corrupt(key, f"does not match the sha256 it was kept under ({sha256[:12]}…)"))
            continue
        answers[key] = Answer(status, raw, content_type or "", kept_headers)
    return answers, corrupt


def _headers(kept: str | None) -> dict[str, str]:
    """The headers a response was kept with (none for responses kept before revision 0010)."""
    try:
        headers = json.loads(kept) if kept else {}
    except ValueError:
        return {}
    if not isinstance(headers, dict):
        return {}
    return {str(name): str(value) for name, value in headers.items()}
