"""What `archiver sync` writes, for machines and people: JSON lines that parse, stamped text, quiet cron mail."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, Faults, OrgSpec, serve

from .support.commands import Result, run_archiver, sync_env
from .support.fakes import rate_limit_once

SPEC = OrgSpec(seed=5, projects=2, jobs_per_project=3, checkpoints_per_job=2)
# Long enough to be masked wherever it might appear, and unlike anything else in the output.
KEY = "key-5b1e9d7a-never-logged"
ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


@pytest.fixture
def served() -> Iterator[tuple[FakeBaseten, str]]:
    """The organisation served on loopback: the fake and its URL."""
    fake = FakeBaseten(SPEC, api_key=KEY)
    with serve(fake) as url:
        yield fake, url


def sync(api_url: str, database_url: str, *args: str, key: str = KEY) -> Result:
    return run_archiver("sync", *args, env=sync_env(api_url, database_url, key))


def events(text: str) -> list[dict[str, Any]]:
    """Every line as JSON: a line that is not one JSON object fails the test."""
    parsed = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(event, dict) for event in parsed)
    return parsed


def test_json_logs_are_json_on_both_streams_and_end_with_every_counter(database_url: str) -> None:
    healthy = FakeBaseten(SPEC, api_key=KEY)
    broken = healthy.job_ids()[1]
    fake = FakeBaseten(SPEC, api_key=KEY, faults=Faults(broken_jobs={broken: "wrong-type"}))
    rate_limit_once(fake)
    with serve(fake) as url:
        result = sync(url, database_url, "-vv", "--log-format", "json")
    assert result.exit_code == 3, result.output
    out, err = events(result.stdout), events(result.stderr)
    assert KEY not in result.output

    summary = out[-1]
    assert summary["event"] == "summary" and summary["status"] == "partial" and summary["exit_code"] == 3
    total = fake.total_checkpoints() - 1  # the broken entry alone is not archived
    assert summary["checkpoints_inserted"] == total and summary["checkpoints_updated"] == 0
    assert summary["jobs_failed"] == 1 and summary["rate_limited"] == 1
    assert summary["requests"] == fake.request_count() and summary["projects"] == 2
    (failure,) = summary["failures"]
    assert failure["job_id"] == broken and "size_bytes" in failure["message"]
    assert re.fullmatch(ISO_UTC, summary["time"])

    # -vv: one event per attempt, the 429 and its retry included.
    requests = [event for event in err if event.get("event") == "request"]
    assert len(requests) == fake.request_count()
    first, retry = [r for r in requests if r["path"] == "/v1/training_projects"]
    assert (first["status"], first["attempt"], retry["status"], retry["attempt"]) == (429, 1, 200, 2)
    assert all(r["method"] in ("GET", "POST") and r["ms"] >= 0 for r in requests)
    assert any(event["level"] == "error" and event.get("job_id") == broken for event in err)


def test_every_json_line_names_its_event(
    served: tuple[FakeBaseten, str], database_url: str, tmp_path: Path
) -> None:
    """A log shipper routes on `event`: warnings the archiver or a library writes carry one too."""
    _, url = served
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o644)  # warned about, as ssh does
    env = {**sync_env(url, database_url, KEY), "BASETEN_API_KEY": ""}
    result = run_archiver("sync", "-vv", "--log-format", "json", "--api-key-file", str(key_file), env=env)
    assert result.exit_code == 0, result.output
    everything = events(result.stdout) + events(result.stderr)
    assert everything and all(isinstance(e.get("event"), str) and e["event"] for e in everything), [
        e for e in everything if not e.get("event")
    ]
    (warning,) = [e for e in everything if "open to other users" in e["message"]]
    assert warning["event"] == "key_file_open" and warning["level"] == "warning"


def test_a_successful_night_writes_its_summary_event(
    served: tuple[FakeBaseten, str], database_url: str
) -> None:
    fake, api_url = served
    """A good night wrote no JSON at all: the summary was prose."""
    result = sync(api_url, database_url, "--log-format", "json")
    assert result.exit_code == 0, result.output
    (summary,) = events(result.stdout)
    assert summary["event"] == "summary" and summary["status"] == "succeeded" and summary["level"] == "info"
    assert summary["checkpoints_inserted"] == fake.total_checkpoints() and summary["failures"] == []
    # Besides the summary, only progress: the first step and where the run ended.
    assert [event["event"] for event in events(result.stderr)] == ["progress", "progress"]


def test_a_fatal_run_in_json_says_so_in_json(served: tuple[FakeBaseten, str], database_url: str) -> None:
    _fake, api_url = served
    result = sync(api_url, database_url, "--log-format", "json", key="wrong-key-3f9a0c27")
    assert result.exit_code == 1
    (error,) = [event for event in events(result.stderr) if event["event"] == "error"]
    assert error["error"] == "AuthError" and "refused the API key" in error["message"]
    (summary,) = events(result.stdout)
    assert (summary["status"], summary["exit_code"], summary["error"]) == ("failed", 1, "AuthError")
    assert "wrong-key-3f9a0c27" not in result.output


def test_a_usage_error_in_json_is_json() -> None:
    result = run_archiver("sync", "--log-format", "json", "--no-such-option", env={"BASETEN_API_KEY": KEY})
    assert result.exit_code == 2 and result.stdout == ""
    (error,) = events(result.stderr)
    assert error["event"] == "usage_error" and "--no-such-option" in error["message"]


def test_text_log_lines_carry_the_time_in_utc(served: tuple[FakeBaseten, str], database_url: str) -> None:
    _fake, api_url = served
    result = sync(api_url, database_url, "-v")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) >= 2 + 6  # a line per project and per job
    for line in lines:
        stamp, level, _ = line.split(" ", 2)
        assert re.fullmatch(ISO_UTC, stamp) and level in ("INFO", "WARNING"), line
        datetime.fromisoformat(stamp)


def test_very_verbose_logs_every_request_and_never_the_key(
    served: tuple[FakeBaseten, str], database_url: str
) -> None:
    fake, api_url = served
    """-vv promised every request and logged none."""
    result = sync(api_url, database_url, "-vv")
    assert result.exit_code == 0, result.output
    logged = re.findall(r"DEBUG (GET|POST) (\S+): (\d+) in \d+ ms \(attempt (\d+)\)", result.stderr)
    assert len(logged) == fake.request_count() and {attempt for *_, attempt in logged} == {"1"}
    assert sorted(path for _, path, _, _ in logged) == sorted(record.path for record in fake.requests)
    assert KEY not in result.output and DEFAULT_API_KEY not in result.output


def test_quiet_says_nothing_on_success_and_still_names_failures(database_url: str) -> None:
    healthy = FakeBaseten(SPEC, api_key=KEY)
    with serve(healthy) as url:
        quiet = sync(url, database_url, "--quiet")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")

    broken = healthy.job_ids()[0]
    with serve(FakeBaseten(SPEC, api_key=KEY, faults=Faults(broken_jobs={broken: "wrong-type"}))) as url:
        partial = sync(url, database_url, "--quiet", "--full")
    assert partial.exit_code == 3
    assert f"failed: project {healthy.job(broken)['training_project_id']}, job {broken}" in partial.stderr
    assert "INFO" not in partial.stderr and "WARNING" not in partial.stderr

    both = sync(url, database_url, "--quiet", "-v")
    assert both.exit_code == 2 and "--quiet and -v" in both.stderr


def test_the_demo_in_json_writes_json_too(tmp_path: Path) -> None:
    result = run_archiver("demo", "--log-format", "json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    out = events(result.stdout)
    summaries = [event for event in out if event.get("event") == "summary"]
    assert [summary["night"] for summary in summaries] == [0, 1, 2]
    assert all(summary["status"] == "succeeded" for summary in summaries)
    assert summaries[0]["checkpoints_inserted"] > 0 and summaries[2]["checkpoints_deleted"] > 0
    assert [event["night"] for event in out if event.get("event") == "night"] == [1, 2]
    as_of = next(n for n, event in enumerate(out) if event.get("event") == "as_of")
    assert {"project_id", "checkpoints", "size_bytes"} <= set(out[as_of + 1])  # storage rows, one object each
    assert [event["night"] for event in out[-3:]] == [0, 1, 2]  # live storage after each night
    events(result.stderr)


def test_a_library_cleaning_up_after_a_stopped_copy_says_nothing_unless_very_verbose(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """psycopg's own "error ignored terminating <Copy>" line reached stderr when a run stopped mid-COPY."""
    from archiver import logs

    try:
        for verbose, shown in ((0, False), (1, False), (2, True)):
            logs.configure_logging(verbose)
            logging.getLogger("psycopg").warning(
                "error ignored terminating %r: %s", "<Copy>", "server closed"
            )
            logging.getLogger("some.library").warning("a library's warning")
            err = capsys.readouterr().err
            assert ("error ignored terminating" in err) is shown, err
            # Whatever a library says reaches stderr in the archiver's format: time, level, message.
            assert re.search(r"^\d{4}-\d\d-\d\dT\S+ WARNING a library's warning$", err, flags=re.M), err
    finally:
        logs.configure_logging()
