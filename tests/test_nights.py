"""Later nights in the fake API: what a night changes, the same for the same seed and night, and what the archive keeps."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import partial

import httpx
from sqlalchemy.engine import Engine

from archiver import demo
from archiver.fake_api import (
    DEFAULT_API_KEY,
    TERMINAL_STATUSES,
    FakeBaseten,
    Night,
    OrgSpec,
    advance,
    play_until,
)
from archiver.sync import SyncOptions

from .support.commands import start_archiver
from .support.fakes import sync
from .support.nights import NIGHTS, archived, shown

AUTH = {"Authorization": f"Api-Key {DEFAULT_API_KEY}"}
SPEC = OrgSpec(seed=7, projects=4, jobs_per_project=3, checkpoints_per_job=4, active_fraction=0.4)


def served(fake: FakeBaseten) -> dict[str, bytes]:
    """Every answer the API gives about the organisation, by path."""
    paths = ["/v1/training_projects"]
    for project_id in fake.project_ids():
        paths.append(f"/v1/training_projects/{project_id}/jobs")
        for job_id in fake.job_ids(project_id):
            paths.append(f"/v1/training_projects/{project_id}/jobs/{job_id}/checkpoints")
    return {path: fake.handle("GET", path, AUTH, b"").body for path in paths}


def test_a_night_finishes_jobs_saves_and_cleans_up_checkpoints_and_renames_then_deletes_a_project() -> None:
    fake = FakeBaseten(SPEC)
    before = {job_id: fake.job(job_id) for job_id in fake.job_ids()}
    counts = {job_id: len(fake.checkpoints(job_id)) for job_id in before}
    active = [job_id for job_id, job in before.items() if job["current_status"] not in TERMINAL_STATUSES]
    assert active

    first = advance(fake)
    assert (first.number, fake.night) == (1, 1)
    [failed] = first.failed
    assert fake.job(failed)["current_status"] == "TRAINING_JOB_FAILED" and fake.job(failed)["error_message"]
    assert {fake.job(job_id)["current_status"] for job_id in first.completed} <= {"TRAINING_JOB_COMPLETED"}
    assert len(first.failed) + len(first.completed) == (len(active) + 1) // 2
    # Every job that was waiting or running saved a checkpoint or two.
    assert all(counts[job_id] + 1 <= len(fake.checkpoints(job_id)) <= counts[job_id] + 2 for job_id in active)
    assert first.saved == sum(len(fake.checkpoints(job_id)) - counts[job_id] for job_id in active)
    # Finished jobs lost their oldest checkpoint, never down to fewer than two.
    shrunk = [
        job_id for job_id in before if job_id not in active and len(fake.checkpoints(job_id)) < counts[job_id]
    ]
    assert len(shrunk) == first.cleaned >= 1
    assert all(len(fake.checkpoints(job_id)) == counts[job_id] - 1 >= 2 for job_id in shrunk)
    # A job started, with nothing saved yet.
    new = [job_id for job_id in fake.job_ids() if job_id not in before]
    assert len(new) == 1 and fake.job(new[0])["current_status"] == "TRAINING_JOB_RUNNING"
    assert fake.checkpoints(new[0]) == []
    assert first.renamed is not None and first.deleted is None
    renamed, old, name = first.renamed
    assert (fake.project(renamed)["name"], name) == (name, f"{old}-v2")
    assert {fake.job(job_id)["training_project"]["name"] for job_id in fake.job_ids(renamed)} == {name}

    projects = fake.project_ids()
    second = advance(fake)
    assert second.renamed is None and second.deleted is not None
    deleted = second.deleted[0]
    assert deleted != renamed and fake.project_ids() == [p for p in projects if p != deleted]
    assert fake.handle("GET", f"/v1/training_projects/{deleted}", AUTH, b"").status == 404
    assert len(fake.project_ids()) == SPEC.projects - 1 == len(FakeBaseten(SPEC).project_ids()) - 1


def test_a_night_says_what_it_changed_in_words() -> None:
    night = Night(3, started=["j1"], saved=1, completed=["j2"], cleaned=2)
    assert str(night) == "Night 3: 1 job finished (0 failed); 1 started; 1 checkpoint saved, 2 cleaned up"
    night = Night(4, saved=2, completed=["j2", "j3"], failed=["j4"], renamed=("p1", "a", "a-v2"))
    assert str(night) == (
        "Night 4: 3 jobs finished (1 failed); 0 started; 2 checkpoints saved, 0 cleaned up; "
        "project p1 renamed from a to a-v2"
    )


def test_the_same_seed_and_night_give_the_same_answers_whether_played_or_advanced_on_request() -> None:
    played = FakeBaseten(SPEC)
    assert play_until(played, 3)[-1].number == 3 and play_until(played, 3) == []
    asked = FakeBaseten(SPEC)
    answers = [asked.handle("POST", "/__fake__/advance", AUTH, b"") for _ in range(3)]
    assert [json.loads(answer.body)["night"] for answer in answers] == [1, 2, 3]
    assert json.loads(answers[0].body)["changes"].startswith("Night 1: ")
    assert served(asked) == served(played)
    assert served(played) != served(FakeBaseten(SPEC)) != served(play_until_new(2))
    assert served(play_until_new(2)) == served(play_until_new(2))


def play_until_new(night: int) -> FakeBaseten:
    fake = FakeBaseten(SPEC)
    play_until(fake, night)
    return fake


def test_advancing_needs_the_key_and_a_post() -> None:
    fake = FakeBaseten(SPEC)
    assert fake.handle("POST", "/__fake__/advance", {}, b"").status == 401
    assert fake.handle("GET", "/__fake__/advance", AUTH, b"").status == 405
    assert fake.night == 0


def test_placed_projects_and_jobs_are_left_as_they_are() -> None:
    fake = demo.organisation()
    project, jobs = (
        fake.project(demo.PROJECT_ID),
        {j: fake.checkpoints(j) for j in fake.job_ids(demo.PROJECT_ID)},
    )
    play_until(fake, 4)
    assert fake.project(demo.PROJECT_ID) == project
    assert {j: fake.checkpoints(j) for j in fake.job_ids(demo.PROJECT_ID)} == jobs


def test_fake_api_serves_the_night_it_is_asked_for() -> None:
    shape = ("--seed", "7", "--projects", "4", "--jobs", "3", "--checkpoints", "4")
    process = start_archiver("fake-api", "--port", "0", *shape, "--night", "2")
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"on (http://\S+), night 2 ", line)
        assert found, line
        expected = FakeBaseten(OrgSpec(seed=7, projects=4, jobs_per_project=3, checkpoints_per_job=4))
        play_until(expected, 2)
        with httpx.Client(base_url=found.group(1), headers=AUTH) as client:
            assert {path: client.get(path).content for path in served(expected)} == served(expected)
            advanced = client.post("/__fake__/advance")
            assert advanced.status_code == 200 and advanced.json()["night"] == 3
            advance(expected)
            assert {path: client.get(path).content for path in served(expected)} == served(expected)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_archive_keeps_every_night_the_fake_plays(archive: Engine) -> None:
    """Synced after each night, the archive as of each run is what the API showed that night:
    the deleted project and the renamed one's old name stay in the past."""
    fake = FakeBaseten(SPEC)
    seen = []
    for number, when in enumerate(NIGHTS[:4]):
        if number:
            advance(fake)
        report = sync(archive, fake, SyncOptions(), clock=partial(_at, when))
        assert report.exit_code == 0, report.summary()
        seen.append(shown(fake))
    for when, expected in zip(NIGHTS, seen, strict=False):
        assert archived(archive, when) == expected
    assert archived(archive, None) == seen[-1]
    assert len(seen[0].projects) == len(seen[-1].projects) + 1


def _at(when: datetime) -> datetime:
    return when
