"""A large checkpoint listing is read as a stream, and archives exactly what the same listing read whole does."""

from __future__ import annotations

import codecs
import hashlib
import json
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import answer, bounds, client, db, migrate, redaction, streamed
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, OrgSpec, serve
from archiver.normalize import Where
from archiver.responses import Kept
from archiver.schema import RUN_COUNTERS
from archiver.sync import SyncOptions

from .support import fakes
from .support.archive_dump import dump
from .support.commands import run_archiver, sync_env
from .support.databases import rows
from .support.nights import NIGHTS, play
from .support.payloads import CHECKPOINTS, JOB, PROJECT, payload
from .support.times import stopped


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each checkpoint listing the client left on disk was read as a stream (False: read whole)."""
    taken: list[bool] = []
    real = streamed.large_listing

    def large_listing(*args: Any, **kwargs: Any) -> streamed.LargeListing | None:
        found = real(*args, **kwargs)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(streamed, "large_listing", large_listing)
    return taken


def spill(monkeypatch: pytest.MonkeyPatch, at: int | None) -> None:
    """Leave every checkpoint listing of more than `at` bytes on disk (None: none)."""
    monkeypatch.setattr(client, "SPILL_BYTES", at if at is not None else 1 << 40)


@pytest.fixture
def twins(new_database: Callable[[], str]) -> Iterator[tuple[Engine, Engine]]:
    """Two fresh archives of the kind under test: one reads every listing whole, the other as a stream."""
    with ExitStack() as stack:
        yield stack.enter_context(_fresh(new_database())), stack.enter_context(_fresh(new_database()))


@contextmanager
def _fresh(url: str) -> Iterator[Engine]:
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def record(engine: Engine) -> dict[str, Any]:
    """All an archive says: every table as `dump` gives it with times, the kept bodies, errors and quarantine."""
    found: dict[str, Any] = dump(engine, times=True)
    with engine.connect() as connection:
        bodies = connection.execute(sa.text("SELECT sha256, size_bytes, body FROM api_response_bodies")).all()
        found["bodies"] = sorted((sha, size, zlib.decompress(body)) for sha, size, body in bodies)
        found["errors"] = sorted(
            connection.execute(sa.text("SELECT project_id, job_id, kind, message FROM sync_errors")).all()
        )
        counters = ", ".join(RUN_COUNTERS)
        found["runs"] = connection.execute(
            sa.text(f"SELECT status, {counters} FROM sync_runs ORDER BY id")
        ).all()
    return found


@pytest.mark.parametrize("hashes", ["as Python hashes", "in two hashes"])
def test_six_nights_read_as_streams_archive_what_they_archive_read_whole(
    twins: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch, counted: list[bool], hashes: str
) -> None:
    if hashes == "in two hashes":  # a stream holds ids as hashes: here most share one, and nothing may change
        monkeypatch.setattr(streamed, "_hash", lambda id_: len(str(id_)) % 2)
    whole, streamed_ = twins
    spill(monkeypatch, None)
    play(whole)
    assert not counted
    spill(monkeypatch, 0)
    play(streamed_)
    assert counted and all(counted), "every checkpoint listing should have been read as a stream"
    assert record(streamed_) == record(whole)


def hostile(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def entry(checkpoint_id: str, **changes: Any) -> dict[str, Any]:
    return {**CHECKPOINTS[0], "checkpoint_id": checkpoint_id, **changes}


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


NAMED = payload()["checkpoints"]
# Bodies a stream could read differently from `json`, or that break the contract: each must end as read whole.
BODIES: dict[str, Any] = {
    "plain": payload(),
    "an entry quarantined": payload(checkpoints=[*NAMED, entry("checkpoint-9", size_bytes="big")]),
    "an entry without an id": payload(checkpoints=[*NAMED, {"size_bytes": 1}]),
    "an id listed twice": payload(checkpoints=[*NAMED, entry("checkpoint-500", size_bytes=1)]),
    "a key with a dot": {**payload(), "checkpoints.item": entry("checkpoint-7")},
    "an empty key holding checkpoints": {**payload(), "": {"checkpoints": [entry("checkpoint-7")]}},
    "a top-level key twice": b'{"checkpoints": [], ' + hostile(payload())[1:],
    "says there is more": payload(has_more=True),
    "a total above what is listed": payload(total_count=5),
    "an integer beyond 64 bits": payload(checkpoints=[entry("checkpoint-8", shards=2**70)]),
    "a lone surrogate": hostile(payload()).replace(b"Qwen3-8B", b"Qwen3-8B\\ud800", 1),
    "an escaped pair": hostile(payload()).replace(b"Qwen3-8B", b"Qwen3-8B\\ud83d\\ude00", 1),
    "a NUL": hostile(payload()).replace(b"Qwen3-8B", b"Qwen3\\u0000", 1),
    "a byte order mark": codecs.BOM_UTF8 + hostile(payload()),
    "UTF-16": json.dumps(payload()).encode("utf-16"),
    "not UTF-8": hostile(payload()).replace(b"Qwen3-8B", b"Qwen3-\xff", 1),
    "the key echoed": hostile(payload()).replace(b"Qwen3-8B", DEFAULT_API_KEY.encode(), 1),
    "the key escaped": hostile(payload()).replace(
        b"Qwen3-8B", "".join(f"\\u{ord(c):04x}" for c in DEFAULT_API_KEY).encode(), 1
    ),
    "nested too deep": payload(checkpoints=[entry("checkpoint-8", shards=deep(300))]),
    "NaN": hostile(payload()).replace(b"174391296", b"NaN", 1),
    "cut short": hostile(payload())[:-20],
    "trailing data": hostile(payload()) + b" {}",
    "not an object": hostile([payload()]),
    "checkpoints not a list": payload(checkpoints={"item": entry("checkpoint-7")}),
    "another job": payload(training_job={**JOB, "id": "zzzzzzz"}),
    "no job": {"checkpoints": NAMED},
    "no checkpoints": {"training_job": JOB},
}


def night_of(engine: Engine, body: Any) -> tuple[int, list[str], dict[str, Any]]:
    report = fakes.sync(engine, fakes.one_listing(PROJECT, JOB, hostile(body)), clock=lambda: NIGHTS[0])
    return report.exit_code, [str(failure) for failure in report.failures], record(engine)


@pytest.mark.parametrize("case", BODIES)
def test_a_hostile_listing_read_as_a_stream_ends_as_it_does_read_whole(
    twins: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch, counted: list[bool], case: str
) -> None:
    whole, streamed_ = twins
    spill(monkeypatch, None)
    expected = night_of(whole, BODIES[case])
    spill(monkeypatch, 0)
    assert night_of(streamed_, BODIES[case]) == expected
    if case in ("plain", "an entry quarantined", "an entry without an id", "says there is more"):
        assert counted == [True]  # these are read as streams; the rest may be read whole


SHARING = {
    "each id its own": {},
    "two listed ids": {"checkpoint-2": "checkpoint-1"},
    "an unlisted and a listed id": {"checkpoint-3": "checkpoint-1"},
}


@pytest.mark.parametrize("sharing", SHARING)
def test_a_checkpoint_gone_from_a_stream_is_marked_deleted_whatever_hash_its_id_shares(
    twins: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch, counted: list[bool], sharing: str
) -> None:
    # A stream holds the ids it listed as hashes; two ids sharing one must not hide a deletion, nor
    # make a listing that names every id once look as if it named one twice.
    shares = SHARING[sharing]

    def shared_hash(id_: str) -> int:
        return hash(shares.get(id_, id_))

    monkeypatch.setattr(streamed, "_hash", shared_hash)
    ids = ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    whole, streamed_ = twins
    for engine, spill_at in ((whole, None), (streamed_, 0)):
        spill(monkeypatch, spill_at)
        for night, listed in enumerate((ids, ids[:2])):
            body = hostile(payload(checkpoints=[entry(checkpoint_id) for checkpoint_id in listed]))
            fake = fakes.one_listing(PROJECT, JOB, body)
            report = fakes.sync(engine, fake, SyncOptions(full=True), clock=stopped(NIGHTS[night]))
            assert report.exit_code == 0, report.summary()
    assert counted == [True, True]
    assert rows(streamed_, "SELECT checkpoint_id FROM checkpoints WHERE deleted_at IS NOT NULL") == [
        ("checkpoint-3",)
    ]
    assert record(streamed_) == record(whole)


def test_a_stream_holds_the_ids_it_listed_as_hashes_and_answers_for_each() -> None:
    held = streamed.HashedIds()
    ids = [f"checkpoint-{n}" for n in range(10_000)]
    for checkpoint_id in ids:
        held.add(checkpoint_id)
    assert len(held) == 10_000 and not held.repeated()
    assert all(checkpoint_id in held for checkpoint_id in ids)
    assert not any(f"checkpoint-{n}" in held for n in range(10_000, 20_000))
    held.add("checkpoint-7")  # added after a lookup: still found, and now repeated
    assert "checkpoint-7" in held and held.repeated() == {hash("checkpoint-7")}
    assert 7 not in held  # not an id


def spilled_answer(body: bytes) -> answer.ApiResponse:
    """What the client makes of a successful response whose body `bounds.send` left on disk."""
    file = tempfile.TemporaryFile()  # noqa: SIM115 (the answer holds it open, as the client's does)
    file.write(body)
    file.seek(0)
    request = httpx.Request("GET", "http://fake-baseten.invalid/v1/training_projects/a/jobs/b/checkpoints")
    response = httpx.Response(200, content=b"", request=request, extensions={bounds.SPILLED: file})
    return answer.of(response, Where("a", "b"))


def test_a_large_body_is_hashed_and_compressed_in_the_pass_that_scans_it() -> None:
    body = hostile(payload(checkpoints=[entry(f"checkpoint-{n}") for n in range(5000)]))
    assert len(body) > 2 * 1024 * 1024  # several pieces of the scan
    found = spilled_answer(body)
    assert found.spilled is not None and found.body == b""
    kept = Kept.of(found)
    assert (kept.sha256, kept.size_bytes) == (hashlib.sha256(body).hexdigest(), len(body))
    assert zlib.decompress(kept.compressed) == body == found.spilled.file.read()


@pytest.mark.parametrize("width", [1, 6], ids=["plain", "escaped"])
def test_a_key_across_two_pieces_of_the_scan_is_masked(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-QzXwKjHpMvR"  # 14 characters: neither piece holds 8 of them
    # Registered for this test only: the process's other tests must not see their values masked.
    monkeypatch.setattr(redaction, "_secrets", redaction._secrets)
    monkeypatch.setattr(redaction, "_lookup", redaction._lookup)
    redaction.register(key)
    echoed = key if width == 1 else "".join(f"\\u{ord(c):04x}" for c in key)
    head = hostile(payload(checkpoints=[entry(f"checkpoint-{n}") for n in range(2000)]))[
        :-3
    ]  # the last entry open
    opening = b', "note": "'
    # The first piece of the scan (1 MiB) ends after the key's first 7 characters.
    filler = b" " * (1024 * 1024 - 7 * width - len(head) - len(opening))
    body = head + filler + opening + echoed.encode() + b'"}]}'
    found = spilled_answer(body)
    assert found.spilled is None  # read whole, so that it is masked
    assert redaction.MASK.encode() in found.body and key.encode() not in found.body
    assert json.loads(found.body)["checkpoints"][-1]["note"] == redaction.MASK


def test_a_full_temporary_directory_fails_the_job_by_name_and_loses_nothing(
    archive: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fakes.small_org(projects=2)
    assert fakes.sync(archive, fake).exit_code == 0
    before = record(archive)["checkpoints"]

    class Full(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    spill(monkeypatch, 0)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", Full)
    report = fakes.sync(archive, fake, SyncOptions(full=True))
    assert report.exit_code != 0 and len(report.failures) == 2
    assert all(
        "could not be written to a temporary file (No space left on device)" in failure.message
        and "TMPDIR" in failure.message
        for failure in report.failures
    )
    assert record(archive)["checkpoints"] == before


# Run a command with no file allowed past 1 MiB (Python ignores SIGXFSZ: a write past it fails with EFBIG).
FILES_UNDER_1_MIB = (
    sys.executable,
    "-c",
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20)); "
    "os.execvp(sys.argv[1], sys.argv[1:])",
)


def test_the_archiver_command_reads_large_listings_over_loopback_a_piece_at_a_time(
    archive: Engine, database_url: str, tmp_path: Path
) -> None:
    fake = FakeBaseten(OrgSpec(seed=3, projects=1, jobs_per_project=2, checkpoints_per_job=5000))
    jobs = fake.job_ids()
    auth = {"Authorization": f"Api-Key {DEFAULT_API_KEY}"}
    paths = {
        job_id: f"/v1/training_projects/{fake.project_ids()[0]}/jobs/{job_id}/checkpoints" for job_id in jobs
    }
    served = {job_id: fake.handle("GET", path, auth, b"").body for job_id, path in paths.items()}
    assert all(len(body) > client.SPILL_BYTES for body in served.values())  # both are left on disk
    spool = tmp_path / "tmp"
    spool.mkdir()
    with serve(fake) as url:
        env = sync_env(url, database_url) | {"TMPDIR": str(spool)}
        # Where no file may pass 1 MiB, both listings fail, each by name: the proof they went to disk.
        refused = run_archiver("sync", env=env, prefix=FILES_UNDER_1_MIB)
        assert refused.exit_code == 3, refused.output
        project = fake.project_ids()[0]
        assert sorted(line for line in refused.stderr.splitlines() if line.startswith("failed:")) == sorted(
            f"failed: project {project}, job {job_id}: GET {paths[job_id]}: the response could not be written "
            "to a temporary file (File too large); make room in the temporary directory (TMPDIR)"
            for job_id in jobs
        )
        assert not rows(archive, "SELECT 1 FROM checkpoints")
        first = run_archiver("sync", "--full", env=env)
        assert first.exit_code == 0, first.output
        assert len(rows(archive, "SELECT 1 FROM checkpoints")) == 10_000
        with archive.connect() as connection:
            kept = {
                zlib.decompress(body)
                for (body,) in connection.execute(sa.text("SELECT body FROM api_response_bodies"))
            }
        assert set(served.values()) <= kept  # kept byte for byte, as received

        gone, grown = fake.checkpoints(jobs[0])[0], fake.checkpoints(jobs[1])[-1]
        fake.delete_checkpoint(jobs[0], gone["checkpoint_id"])
        fake.update_checkpoint(jobs[1], grown["checkpoint_id"], size_bytes=grown["size_bytes"] + 1)
        again = run_archiver("sync", "--full", env=env)
    assert again.exit_code == 0, again.output
    assert "checkpoints 0 inserted, 1 updated, 9998 unchanged, 1 marked deleted" in again.output
    assert rows(archive, "SELECT count(*) FROM checkpoints WHERE deleted_at IS NOT NULL") == [(1,)]
    assert not list(spool.iterdir())  # no temporary file left behind
