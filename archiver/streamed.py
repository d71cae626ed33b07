"""Read a large checkpoint listing as a stream: whatever a job holds, it is never whole in memory.

A listing the client left on disk (`answer.Spilled`) is read twice with ijson's C parser. The
fetch worker reads its `outline` once: the top level without the entries, how many entries
there are, and that nothing in it reads differently as a stream than with `json`. The writer
then reads the entries a piece at a time (`LargeListing.pieces`), each normalized as
`normalize.checkpoint_listing` would, and writes each piece before reading the next.

Anything a stream might read differently, or a contract error would name differently, sends the
body down the ordinary path instead, read whole (`outline` returns None): a top level that is
not an object, a top-level key repeated or holding a dot (ijson's paths could not tell it from a
nested one), a checkpoint id listed twice (the later entry wins, which a stream learns too late),
an integer beyond 64 bits, nesting past the contract's limit, or anything ijson cannot parse.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import IO, Any

import ijson

from archiver.contract import COMPLETE_SYNC_STATUSES, MAX_JSON_DEPTH
from archiver.errors import MalformedResponse
from archiver.normalize import (
    CheckpointListing,
    JobRecord,
    Listing,
    Rejected,
    Row,
    Where,
    checkpoint_row,
    items,
    listing_job,
    more_than_listed,
    obj,
    rejected_entry,
    required,
)

ENTRIES = "checkpoints.item"
_ENTRY_ID = "checkpoints.item.checkpoint_id"
_OPEN = frozenset(("start_map", "start_array"))
_CLOSE = frozenset(("end_map", "end_array"))
_BUCKETS = 256
_hash: Callable[[str], int] = hash  # a test makes ids share hashes


class HashedIds:
    """A set of ids too many to hold as strings: each is held as its 64-bit hash, 8 bytes.

    A listing of a million checkpoints held its ids as a set of strings twice over (the outline's
    check for an id listed twice, then the writer's record of what was listed), about 110 bytes
    each: most of what such a sync held. Two ids can share a hash (Python's, keyed at random per
    process: about one chance in 37 million for a million ids), so a shared hash is only ever a
    question: `repeated` names the hashes to check against the ids themselves, and a caller asking
    whether an id is `in` the set confirms what it found another way (see `store.save_large_listing`).
    """

    def __init__(self) -> None:
        self._buckets = [array("q") for _ in range(_BUCKETS)]
        self._count = 0
        self._sorted = True

    def add(self, id_: str) -> None:
        hashed = _hash(id_)
        self._buckets[hashed % _BUCKETS].append(hashed)
        self._count += 1
        self._sorted = False

    def __len__(self) -> int:
        """How many ids were added (one added twice counts twice)."""
        return self._count

    def __contains__(self, id_: object) -> bool:
        """Whether an id with this one's hash was added: this id, or (rarely) another."""
        if not isinstance(id_, str):
            return False
        hashed = _hash(id_)
        bucket = self._sort()[hashed % _BUCKETS]
        at = bisect_left(bucket, hashed)
        return at < len(bucket) and bucket[at] == hashed

    def repeated(self) -> set[int]:
        """The hashes added more than once: by an id added twice, or by two ids that share one."""
        return {hashed for bucket in self._sort() for hashed, after in pairwise(bucket) if hashed == after}

    def _sort(self) -> list[array[int]]:
        if not self._sorted:
            for at, bucket in enumerate(self._buckets):  # one at a time: a bucket's list is all it adds
                self._buckets[at] = array("q", sorted(bucket))
            self._sorted = True
        return self._buckets


@dataclass(frozen=True)
class Outline:
    """A listing's top level with its entries left out (`checkpoints` an empty list), and how many there are."""

    payload: dict[str, Any]
    entries: int


def outline(file: IO[bytes]) -> Outline | None:
    """Read a listing once for its outline; None when it must be read whole instead (see the module)."""
    builder = ijson.ObjectBuilder()
    top_keys: set[str] = set()
    ids = HashedIds()
    depth = entries = 0
    in_entries = False
    file.seek(0)
    try:
        for prefix, event, value in ijson.parse(file, use_float=True):
            if not depth and event != "start_map":
                return None  # not an object: the contract says so, read whole
            if in_entries and depth >= 2 and not (depth == 2 and event == "end_array"):
                if depth == 2 and event not in _CLOSE:
                    entries += 1
                elif depth == 3 and event == "string" and prefix == _ENTRY_ID:
                    ids.add(value)
            else:
                if depth == 1 and event == "map_key":
                    if not value or "." in value or value in top_keys:
                        return None
                    top_keys.add(value)
                if depth == 1 and prefix == "checkpoints" and event == "start_array":
                    in_entries = True
                elif depth == 2 and in_entries and event == "end_array":
                    in_entries = False
                builder.event(event, value)
            if event in _OPEN:
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    return None
            elif event in _CLOSE:
                depth -= 1
        if _listed_twice(file, ids.repeated()):
            return None
    except (ijson.JSONError, ValueError, OverflowError):
        return None
    finally:
        file.seek(0)
    payload = builder.value
    return Outline(payload, entries) if isinstance(payload, dict) else None


def _listed_twice(file: IO[bytes], suspects: set[int]) -> bool:
    """Whether an id whose hash `outline` saw more than once really is listed twice, not two sharing a hash."""
    if not suspects:
        return False
    seen: set[str] = set()
    for checkpoint_id in _entry_ids(file):
        if _hash(checkpoint_id) in suspects:
            if checkpoint_id in seen:
                return True
            seen.add(checkpoint_id)
    return False


def _entry_ids(file: IO[bytes]) -> Iterator[str]:
    """The string ids of a listing's entries, as `outline` finds them, read again from the start."""
    file.seek(0)
    depth = 0
    for prefix, event, value in ijson.parse(file, use_float=True):
        if depth == 3 and event == "string" and prefix == _ENTRY_ID:
            yield value
        if event in _OPEN:
            depth += 1
        elif event in _CLOSE:
            depth -= 1


@dataclass
class LargeListing(Listing):
    """A job's checkpoint listing too large to hold: its job and outline now, its entries a piece at a time.

    What depends on every entry (`rejected`, `all_complete`, `written`) is known once `pieces`
    has run to its end.
    """

    project_id: str
    job: JobRecord
    file: IO[bytes]
    written: int = 0
    uploads_complete: bool = True

    @property
    def checkpoint_count(self) -> int:
        """How many checkpoints the listing had that the contract took."""
        return self.written

    @property
    def all_complete(self) -> bool:
        """As `CheckpointListing.all_complete`, once `pieces` has read every entry."""
        if self.job.row["checkpoint_sync_status"] == "SYNCING" or not self.complete or self.rejected:
            return False
        return self.uploads_complete

    def pieces(self, rows: int) -> Iterator[CheckpointListing]:
        """The entries, normalized, at most `rows` to a piece; each call reads the listing from its start."""
        self.rejected, self.written, self.uploads_complete = [], 0, True
        self.file.seek(0)
        job_id = self.job.row["id"]
        piece: list[Row] = []
        configs: dict[str, Row] = {}
        rejected: list[Rejected] = []
        entries = Where(self.project_id, job_id) / "checkpoints"
        for index, entry in enumerate(ijson.items(self.file, ENTRIES, use_float=True)):
            try:
                row, config = checkpoint_row(entry, entries / index, job_id)
            except MalformedResponse as exc:
                rejected.append(rejected_entry(exc, entry, "checkpoint_id"))
                continue
            piece.append(row)
            if config is not None:
                configs[config["config_sha256"]] = config
            if row["sync_status"] not in COMPLETE_SYNC_STATUSES and row["sync_status"] is not None:
                self.uploads_complete = False
            if len(piece) >= rows:
                yield self._piece(piece, configs, rejected)
                piece, configs, rejected = [], {}, []
        if piece or rejected:
            yield self._piece(piece, configs, rejected)

    def _piece(self, rows: list[Row], configs: dict[str, Row], rejected: list[Rejected]) -> CheckpointListing:
        self.written += len(rows)
        self.rejected += rejected
        return CheckpointListing(self.project_id, self.job, rows, configs, rejected=rejected)

    def close(self) -> None:
        """Remove the body from disk."""
        self.file.close()


def large_listing(
    file: IO[bytes], project_id: str, job_id: str, link: str = "", listed_job: JobRecord | None = None
) -> LargeListing | None:
    """A large checkpoint listing for the writer to read as a stream; None when it must be read whole.

    Raise MalformedResponse as `normalize.checkpoint_listing` does for what breaks the contract
    outside the entries (the job, the `checkpoints` key).
    """
    found = outline(file)
    if found is None:
        return None
    where = Where(project_id, job_id)
    payload: Mapping[str, Any] = obj(found.payload, where)
    job = listing_job(payload, where, listed_job)
    items(required(payload, "checkpoints", where), where / "checkpoints")
    incomplete = more_than_listed(payload, found.entries, where, link)
    return LargeListing(project_id, job, file, incomplete=incomplete)
