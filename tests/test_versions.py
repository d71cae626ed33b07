"""Every version kept: nights of changes read back `--as-of` each night exactly as the API showed it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from archiver import query
from archiver.errors import QueryError
from archiver.sync import SyncOptions

from .support.commands import run_archiver
from .support.databases import rows, scalar
from .support.fakes import sync
from .support.nights import HISTORY_TABLES, NIGHTS, Scenario, Shown, archived, play
from .support.times import utc


@pytest.fixture
def scenario(archive: Engine) -> Scenario:
    return play(archive)


def test_as_of_each_night_answers_exactly_as_the_api_showed_it(scenario: Scenario, archive: Engine) -> None:
    for n, expected in enumerate(scenario.shown):
        # An hour into the night's run, and just before the next one began.
        for at in (
            NIGHTS[n] + timedelta(hours=1),
            NIGHTS[n + 1] - timedelta(microseconds=1) if n < 5 else None,
        ):
            assert archived(archive, at) == expected, f"as of {at}"
    # The nights did differ: each change shows between two nights.
    first, second, third, fourth = scenario.shown[:4]
    assert first.projects[scenario.renamed_project] != second.projects[scenario.renamed_project]
    assert (
        first.instance_types[scenario.respecified_type] * 2
        == second.instance_types[scenario.respecified_type]
    )
    assert first.checkpoints[scenario.resized] != second.checkpoints[scenario.resized]
    assert second.checkpoints[scenario.relinked][1] != third.checkpoints[scenario.relinked][1]
    assert scenario.hidden_job not in third.jobs and scenario.hidden_job in fourth.jobs
    assert scenario.vanished not in third.checkpoints and scenario.vanished in fourth.checkpoints
    # Before the first night the archive held nothing.
    assert archived(archive, NIGHTS[0] - timedelta(seconds=1)) == Shown({}, {}, {}, {})


def test_versions_record_each_change_deletion_and_return_with_its_period(
    scenario: Scenario, archive: Engine
) -> None:
    job, checkpoint = scenario.vanished
    versions = rows(
        archive,
        "SELECT deleted_at, valid_from, valid_to FROM checkpoint_versions "
        "WHERE training_job_id = :j AND checkpoint_id = :c ORDER BY valid_from",
        j=job,
        c=checkpoint,
    )
    assert [(utc(d), utc(f), utc(t)) for d, f, t in versions] == [
        (None, NIGHTS[0], NIGHTS[2]),  # live from its first night
        (NIGHTS[2], NIGHTS[2], NIGHTS[3]),  # deleted: a version too
        (None, NIGHTS[3], None),  # back
    ]
    names = rows(
        archive,
        "SELECT name, valid_from, valid_to FROM training_project_versions WHERE id = :p ORDER BY valid_from",
        p=scenario.renamed_project,
    )
    # Its name changed once; its other values (updated_at, as its jobs changed) may make later versions.
    assert [(n, utc(f), utc(t)) for n, f, t in names[:2]] == [
        (scenario.shown[0].projects[scenario.renamed_project], NIGHTS[0], NIGHTS[1]),
        ("renamed-by-the-team", NIGHTS[1], utc(names[1][2])),
    ]
    assert {n for n, _, _ in names[1:]} == {"renamed-by-the-team"} and names[-1][2] is None
    statuses = rows(
        archive,
        "SELECT status, observed_at FROM training_job_status_history WHERE training_job_id = :j ORDER BY observed_at",
        j=scenario.finished_job,
    )
    assert [(s, utc(at)) for s, at in statuses] == [
        ("TRAINING_JOB_RUNNING", NIGHTS[0]),
        ("TRAINING_JOB_COMPLETED", NIGHTS[1]),
    ]
    hidden = rows(
        archive,
        "SELECT deleted_at, valid_from, valid_to FROM training_job_versions WHERE id = :j ORDER BY valid_from",
        j=scenario.hidden_job,
    )
    assert [(utc(d), utc(f), utc(t)) for d, f, t in hidden[-2:]] == [
        (NIGHTS[2], NIGHTS[2], NIGHTS[3]),
        (None, NIGHTS[3], None),
    ]
    assert hidden[-3][0] is None and utc(hidden[-3][2]) == NIGHTS[2]


def test_an_unchanged_night_adds_no_versions(scenario: Scenario, archive: Engine) -> None:
    counts = [scalar(archive, f"SELECT COUNT(*) FROM {table}") for table in HISTORY_TABLES]
    report = sync(archive, scenario.fake, SyncOptions(full=True), clock=lambda: NIGHTS[5] + timedelta(days=1))
    assert report.exit_code == 0 and report.counts.checkpoints_updated == 0
    assert [scalar(archive, f"SELECT COUNT(*) FROM {table}") for table in HISTORY_TABLES] == counts
    assert all(int(str(count)) > 0 for count in counts)  # the scenario made versions of every kind


def test_query_as_of_before_the_first_sync_says_so(scenario: Scenario, database_url: str) -> None:
    sql = "SELECT COUNT(*) AS checkpoints FROM checkpoints"
    early = run_archiver(
        "query", "--database-url", database_url, "--as-of", "2026-05-31", "--format", "csv", sql
    )
    assert early.exit_code == 0, early.output
    assert early.stdout.split() == ["checkpoints", "0"]
    first = NIGHTS[0].isoformat()
    assert early.stderr.splitlines() == [
        f"warning: --as-of 2026-05-31T00:00:00+00:00 is before the archive's first sync, which started {first}: "
        "it held nothing then"
    ]
    after = run_archiver(
        "query", "--database-url", database_url, "--as-of", "2026-06-02", "--format", "csv", sql
    )
    assert after.exit_code == 0 and after.stderr == "", after.output
    assert int(after.stdout.split()[1]) > 0


def test_query_as_of_on_the_command_line(scenario: Scenario, database_url: str) -> None:
    job, checkpoint = scenario.resized
    sql = f"SELECT size_bytes FROM checkpoint_facts WHERE job_id = '{job}' AND checkpoint_id = '{checkpoint}'"
    sizes = []
    for at in ("2026-06-01T04:00:00Z", "2026-06-02", "2026-06-02T04:00:00+00:00"):
        result = run_archiver("query", "--database-url", database_url, "--as-of", at, "--format", "json", sql)
        assert result.exit_code == 0, result.output
        sizes.append(json.loads(result.stdout)[0]["size_bytes"])
    assert sizes[0] == sizes[1] == scenario.shown[0].checkpoints[scenario.resized][0]
    assert sizes[2] == scenario.shown[1].checkpoints[scenario.resized][0] != sizes[0]
    bad = run_archiver("query", "--database-url", database_url, "--as-of", "last tuesday", "SELECT 1")
    assert bad.exit_code == 2 and "--as-of expects" in bad.stderr and "Traceback" not in bad.output


def test_an_as_of_read_writes_nothing_and_leaves_no_views_behind(scenario: Scenario, archive: Engine) -> None:
    with query.results(archive, "SELECT COUNT(*) FROM checkpoints", NIGHTS[1]) as result:
        list(result.rows)
    with query.results(archive, "SELECT COUNT(*) FROM checkpoints") as result:
        (now_count,) = next(iter(result.rows))
    assert now_count == scalar(archive, "SELECT COUNT(*) FROM checkpoints")
    with pytest.raises(QueryError), query.results(archive, "DELETE FROM checkpoints", NIGHTS[1]) as result:
        list(result.rows)
