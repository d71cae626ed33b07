"""A key a server echoes is masked in every spelling, in every encoding JSON allows, and in the
headers kept; a body that cannot be scanned is not kept; kept headers replay in `rebuild`."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from archiver import db, redaction
from archiver.fake_api import FakeBaseten, OrgSpec, serve

from .support.archive_dump import dump, every_text
from .support.commands import run_archiver, sync_env
from .support.databases import rows, scalar

KEY = "Sk-Live-7f3a9c-Never-Print-Me"
SPEC = OrgSpec(seed=8, projects=1, jobs_per_project=3, checkpoints_per_job=2)


def percent_encoded(text: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in text)


def json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


# Spellings of the key, or of a run of 8 or more of its characters, that a server may echo.
ECHOES = {
    "as sent": KEY,
    "upper case": KEY.upper(),
    "lower case": KEY.lower(),
    "a 10-character run": KEY[5:15],
    "percent-encoded": percent_encoded(KEY),
    "JSON-escaped": json_escaped(KEY),
    "mixed": KEY[:4].upper() + percent_encoded(KEY[4:9]) + json_escaped(KEY[9:12]) + KEY[12:].lower(),
}


@pytest.fixture
def registered() -> None:
    redaction.register(KEY)


@pytest.mark.parametrize("echo", list(ECHOES.values()), ids=list(ECHOES))
def test_every_spelling_of_the_key_is_masked_in_text_and_bodies(registered: None, echo: str) -> None:
    masked = redaction.redact(f"Location: https://x.invalid/?key={echo}&next=1")
    assert masked == "Location: https://x.invalid/?key=<api key>&next=1"
    body = ('{"echo": "' + echo + '", "n": 1}').encode()  # the echo as the body spells it
    assert redaction.redact_body(body) == b'{"echo": "<api key>", "n": 1}'


def test_seven_characters_of_the_key_are_data(registered: None) -> None:
    assert redaction.redact(f"id {KEY[:7]}!") == f"id {KEY[:7]}!"


def test_the_key_is_masked_among_two_character_escapes(registered: None) -> None:
    """LoRA configs that name their modules by a regular expression fill a listing with `\\\\`; the key
    next to such escapes is masked, and the escapes stay as they came."""
    modules = '"target_modules": ".*\\\\.(self_attn|mlp)\\\\.(q|k|v)_proj"'
    body = f'{{{modules}, "a": "\\n{KEY}\\t", "b": "\\\\{KEY}\\\\", "c": "\\"{KEY[:9]}"}}'.encode()
    masked = f'{{{modules}, "a": "\\n<api key>\\t", "b": "\\\\<api key>\\\\", "c": "\\"<api key>"}}'
    assert redaction.redact_body(body) == masked.encode()
    assert json.loads(redaction.redact_body(body))["target_modules"] == ".*\\.(self_attn|mlp)\\.(q|k|v)_proj"
    # A line feed, then 7 of the key's characters: no run of 8, though the escape's `n` and them would be one.
    unmasked = b'{"d": "\\never-pr"}'
    assert KEY.lower()[15:23] == "never-pr"
    assert redaction.redact_body(unmasked) == unmasked


def test_a_key_holding_a_slash_is_masked_where_json_escapes_the_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "Sk/Live/7f3a9c/Never"
    for name in ("_secrets", "_lookup"):
        monkeypatch.setattr(redaction, name, getattr(redaction, name))
    redaction.register(secret)
    body = ('{"path": "\\n' + secret.replace("/", "\\/") + '", "n": "\\\\Live\\/7f3a9c"}').encode()
    assert redaction.redact_body(body) == b'{"path": "\\n<api key>", "n": "\\\\<api key>"}'


def masked_run_by_run(raw: bytes, secret: str) -> bytes:
    """`redaction`'s masking as it searched before: for every run of MIN_LENGTH characters of `secret`."""
    lowered, n = secret.lower().encode(), redaction.MIN_LENGTH
    escapes = list(redaction._ESCAPE.finditer(raw)) if (b"\\" in raw or b"%" in raw) else []
    view = redaction._unescaped(raw, escapes).lower() if escapes else raw.lower()
    spans = []
    for gram in {lowered[i : i + n] for i in range(len(lowered) - n + 1)}:
        at = view.find(gram)
        while at >= 0:
            spans.append((at, at + n))
            at = view.find(gram, at + 1)
    if not spans:
        return raw
    to_raw, pieces, done = redaction._Positions(escapes), [], 0
    for start, end in redaction._merged(spans):
        first, last = to_raw.start(start), to_raw.end(end - 1)
        pieces += [raw[done:first], redaction.MASK.encode()]
        done = last
    pieces.append(raw[done:])
    return b"".join(pieces)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # A secret holding `/` has it spelled `\/` too: its bodies are read escape by escape (`_blanked`).
    secret=st.text(st.sampled_from("abcAB.-_019xyzntu/"), min_size=8, max_size=45),
    pieces=st.lists(
        st.tuples(
            st.integers(0, 45), st.integers(0, 45), st.sampled_from(["plain", "upper", "%", "\\u", "\\/"])
        ),
        max_size=6,
    ),
    # Two-character escapes (`\\`, `\n`, `\"`) around and between the runs, and `\u` that are not escapes.
    filler=st.text(st.sampled_from('abcAB.-_019xyzntu/ {}:"%\\'), max_size=30),
)
def test_a_key_is_masked_wherever_any_run_of_it_is(
    monkeypatch: pytest.MonkeyPatch, secret: str, pieces: list[tuple[int, int, str]], filler: str
) -> None:
    """The search by pieces of the key finds every run that a search for each run finds, and no other."""
    spell: dict[str, Callable[[str], str]] = {
        "plain": str,
        "upper": str.upper,
        "%": percent_encoded,
        "\\u": json_escaped,
        "\\/": lambda run: run.replace("/", "\\/"),  # as some JSON encoders write a slash
    }
    text = filler.join(spell[how](secret[start : start + length]) for start, length, how in pieces) + filler
    with monkeypatch.context() as patched:  # registered for this example only
        for name in ("_secrets", "_lookup"):
            patched.setattr(redaction, name, getattr(redaction, name))
        redaction.register(secret)
        assert redaction.redact_body(text.encode()) == masked_run_by_run(text.encode(), secret)


ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-8-sig"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_body_in_any_json_encoding_is_masked_in_that_encoding(registered: None, encoding: str) -> None:
    body = json.dumps({"echo": KEY.upper(), "name": "ü"}, ensure_ascii=False).encode(encoding)
    masked = redaction.redact_body(body)
    assert json.loads(masked) == {"echo": "<api key>", "name": "ü"}
    assert masked[:4] == body[:4]  # the byte order mark, or its absence, as received


def checkpoints_path(fake: FakeBaseten, job_id: str) -> str:
    return f"/v1/training_projects/{fake.job(job_id)['training_project_id']}/jobs/{job_id}/checkpoints"


def listing(fake: FakeBaseten, job_id: str, change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    checkpoints = fake.checkpoints(job_id)
    change(checkpoints[0])
    return {"training_job": fake.job(job_id), "checkpoints": checkpoints}


def kept_bodies(engine: Engine) -> list[bytes]:
    with engine.connect() as connection:
        return [
            zlib.decompress(b) for b in connection.scalars(sa.text("SELECT body FROM api_response_bodies"))
        ]


def assert_key_nowhere(engine: Engine, output: str) -> None:
    for spelled in (KEY, KEY.upper(), KEY.lower(), KEY[5:15], KEY[5:15].upper()):
        assert spelled not in output, output
        assert spelled not in every_text(engine)
        for body in kept_bodies(engine):
            for encoding in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
                assert spelled.encode(encoding) not in body


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32-le"])
def test_a_listing_in_utf16_or_utf32_is_archived_with_the_key_masked(
    encoding: str, database_url: str, engine: Engine
) -> None:
    """A UTF-16 body escaped redaction (it looked for the key's UTF-8 bytes): the key reached rows and bodies."""
    fake = FakeBaseten(SPEC, api_key=KEY)
    job_id = fake.job_ids()[0]
    body = listing(fake, job_id, lambda c: c.update(base_model=f"Api-Key {KEY}", note=KEY.upper()))
    wire = json.dumps(body).encode(encoding)
    fake.override(
        "GET", checkpoints_path(fake, job_id), body=wire, headers={"Content-Type": "application/json"}
    )
    with serve(fake) as api:
        result = run_archiver("sync", env=sync_env(api, database_url, key=KEY))
    assert result.exit_code == 0, result.output
    live = "SELECT COUNT(*) FROM checkpoints WHERE training_job_id = :j AND deleted_at IS NULL"
    assert scalar(engine, live, j=job_id) == len(body["checkpoints"])
    assert "<api key>" in every_text(engine)
    assert_key_nowhere(engine, result.output)


def test_a_body_in_no_json_encoding_is_not_kept_but_named(database_url: str, engine: Engine) -> None:
    fake = FakeBaseten(SPEC, api_key=KEY)
    bad_job, *others = fake.job_ids()
    wire = json.dumps(listing(fake, bad_job, lambda c: c.update(note=KEY))).encode()
    wire = wire.replace(b'"note"', b'"n\xffte"')  # not UTF-8: what it says cannot be scanned for the key
    fake.override("GET", checkpoints_path(fake, bad_job), body=wire)
    with serve(fake) as api:
        result = run_archiver("sync", env=sync_env(api, database_url, key=KEY))
    assert result.exit_code == 3, result.output
    assert f"job {bad_job}" in result.stderr and "it is not valid UTF-8 (byte" in result.stderr
    withheld = rows(engine, "SELECT size_bytes, withheld FROM api_response_bodies WHERE withheld IS NOT NULL")
    assert [size for size, _ in withheld] == [len(wire)]
    assert "not valid UTF-8" in str(withheld[0][1])
    fetched = "SELECT id FROM training_jobs WHERE checkpoints_fetched_at IS NOT NULL"
    assert {job for (job,) in rows(engine, fetched)} == set(others)
    assert_key_nowhere(engine, result.output)


def test_a_key_in_a_redirect_or_a_header_is_masked_and_only_needed_headers_kept(
    database_url: str, engine: Engine
) -> None:
    """A key percent-encoded in a redirect's Location reached stderr and sync_errors."""
    fake = FakeBaseten(SPEC, api_key=KEY)
    moved, echoed, *_ = fake.job_ids()
    location = (
        f"https://elsewhere.invalid/login?next=%2Fjobs&key={percent_encoded(KEY)}&k2={KEY[3:14].upper()}"
    )
    fake.override("GET", checkpoints_path(fake, moved), 302, b"", headers={"Location": location})
    echoing = {"X-Echo": KEY, "Set-Cookie": f"s={KEY}", "Link": f'<https://x.invalid/{KEY}>; rel="self"'}
    fake.override("GET", checkpoints_path(fake, echoed), body=listing(fake, echoed, dict), headers=echoing)
    with serve(fake) as api:
        result = run_archiver("sync", env=sync_env(api, database_url, key=KEY))
    assert result.exit_code == 3, result.output
    assert (
        f"job {moved}" in result.stderr and "a redirect to https://elsewhere.invalid/login" in result.stderr
    )
    assert_key_nowhere(engine, result.output)
    kept = [json.loads(str(h)) for (h,) in rows(engine, "SELECT headers FROM api_responses") if h is not None]
    assert kept and all(set(headers) <= {"Date", "Link"} for headers in kept)
    assert {"Link": '<https://x.invalid/<api key>>; rel="self"'}.items() <= next(
        h for h in kept if "Link" in h
    ).items()


def test_rebuild_replays_a_listing_the_link_header_said_was_cut(
    database_url: str, engine: Engine, new_database: Callable[[], str]
) -> None:
    """The Link header was not kept: `rebuild` took the first page for the whole listing and marked the rest deleted."""
    fake = FakeBaseten(SPEC, api_key=KEY)
    job_id = fake.job_ids()[0]
    with serve(fake) as api:
        env = sync_env(api, database_url, key=KEY)
        assert run_archiver("sync", env=env).exit_code == 0
        cut = listing(fake, job_id, dict)
        cut["checkpoints"] = cut["checkpoints"][:1]
        more = {"Link": f'<{api}{checkpoints_path(fake, job_id)}?page=2>; rel="next"'}
        fake.override("GET", checkpoints_path(fake, job_id), body=cut, headers=more)
        assert run_archiver("sync", "--full", env=env).exit_code == 3
    target = new_database()
    replay = run_archiver("rebuild", "--from", database_url, "--database-url", target)
    assert replay.exit_code == 0, replay.output
    copy = db.make_engine(target)
    try:
        assert scalar(copy, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NOT NULL") == 0
        assert dump(copy, times=True) == dump(engine, times=True)
    finally:
        copy.dispose()
