"""What one project's or job's data does fails that project or job and no other; secrets never leave.

A value the database cannot hold, a listing the key may not read, a key refused midway, a role
without TEMPORARY privilege, a key the API echoes back: each is a night a real organisation has.
"""

from __future__ import annotations

import json
import random
import string
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import client, db
from archiver.fake_api import FakeBaseten, OrgSpec, Response, serve
from archiver.sync import SyncReport
from archiver.sync.listings import ListingStep

from .support.archive_dump import every_text
from .support.commands import Result, run_archiver, sync_env
from .support.databases import rows, scalar
from .support.fakes import sync

KEY = "sk-live-7f3a9c-never-print-me"


def organisation(projects: int = 3) -> FakeBaseten:
    """`projects` projects of two jobs each, every job with two checkpoints."""
    return FakeBaseten(
        OrgSpec(seed=5, projects=projects, jobs_per_project=2, checkpoints_per_job=2), api_key=KEY
    )


def checkpoints_path(fake: FakeBaseten, job_id: str) -> str:
    return f"/v1/training_projects/{fake.job(job_id)['training_project_id']}/jobs/{job_id}/checkpoints"


def serve_checkpoints(fake: FakeBaseten, job_id: str, change: Callable[[dict[str, Any]], object]) -> None:
    """Serve `job_id`'s checkpoint listing with its first checkpoint changed by `change`."""
    listed = fake.checkpoints(job_id)
    change(listed[0])
    body = {"training_job": fake.job(job_id), "checkpoints": listed}
    fake.override("GET", checkpoints_path(fake, job_id), body=body)


def archived_jobs(engine: Engine) -> set[str]:
    """The jobs whose checkpoints are in the archive."""
    return {str(job_id) for (job_id,) in rows(engine, "SELECT DISTINCT training_job_id FROM checkpoints")}


def errors(engine: Engine) -> list[tuple[object, ...]]:
    return rows(engine, "SELECT project_id, job_id, kind FROM sync_errors ORDER BY id")


def incompressible(length: int) -> str:
    """Text PostgreSQL cannot compress into an index entry: it must store every byte."""
    rng = random.Random(length)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))


def assert_only_failed(
    report: SyncReport, engine: Engine, fake: FakeBaseten, job_id: str, kind: str, *, whole_job: bool = True
) -> None:
    """The run is partial: `job_id` failed, named, and every other job was archived."""
    assert report.exit_code == 3, report.failures
    assert [(f.job_id, f.kind) for f in report.failures] == [(job_id, kind)]
    assert errors(engine) == [(fake.job(job_id)["training_project_id"], job_id, kind)]
    assert archived_jobs(engine) == set(fake.job_ids()) - ({job_id} if whole_job else set())


def assert_only_the_entry_failed(report: SyncReport, engine: Engine, fake: FakeBaseten, job_id: str) -> None:
    """The run is partial: the first checkpoint of `job_id` failed alone, named and quarantined, and
    every other checkpoint (of that job too) was archived."""
    assert_only_failed(report, engine, fake, job_id, "malformed", whole_job=False)
    first = fake.checkpoints(job_id)[0]["checkpoint_id"]
    kept = {
        str(c)
        for (c,) in rows(engine, "SELECT checkpoint_id FROM checkpoints WHERE training_job_id = :j", j=job_id)
    }
    assert kept == {c["checkpoint_id"] for c in fake.checkpoints(job_id)[1:]} and first not in kept
    (quarantined,) = rows(engine, "SELECT job_id, field FROM rejected_entries")
    assert quarantined[0] == job_id and str(quarantined[1]).startswith("checkpoints[0]")


# ------------------------------------------------------------------------------------------------
# a value the database cannot hold


def test_an_id_too_long_for_an_index_fails_its_entry_only(archive: Engine) -> None:
    """PostgreSQL's btree entries hold 2704 bytes: a 3 KB checkpoint id stopped the whole organisation."""
    fake = organisation()
    job_id = fake.job_ids()[2]
    serve_checkpoints(fake, job_id, lambda checkpoint: checkpoint.update(checkpoint_id=incompressible(3000)))
    report = sync(archive, fake, key=KEY)
    assert_only_the_entry_failed(report, archive, fake, job_id)
    assert "checkpoints[0].checkpoint_id" in report.failures[0].message
    assert "more than the 1024 an archived identifier may have" in report.failures[0].message


def test_a_job_id_too_long_for_an_index_fails_that_entry_of_its_listing_only(archive: Engine) -> None:
    fake = organisation()
    project_id = fake.project_ids()[1]
    listed = [fake.job(job_id) for job_id in fake.job_ids(project_id)]
    listed[0]["id"] = incompressible(3000)
    body = {"training_project": fake.project(project_id), "training_jobs": listed}
    fake.override("GET", f"/v1/training_projects/{project_id}/jobs", body=body)
    report = sync(archive, fake, key=KEY)
    assert report.exit_code == 3
    assert [(f.project_id, f.kind) for f in report.failures] == [(project_id, "malformed")]
    assert "training_jobs[0].id" in report.failures[0].message
    assert archived_jobs(archive) == set(fake.job_ids()) - {fake.job_ids(project_id)[0]}


@pytest.mark.parametrize(
    ("where", "depth"),
    [("extra", 300), ("extra", 975), ("lora_adapter_config", 975)],
    ids=["300-deep-extra", "975-deep-extra", "975-deep-lora-config"],
)
def test_json_nested_too_deep_fails_its_entry_only(archive: Engine, where: str, depth: int) -> None:
    """~1,000 levels raised RecursionError (serialising, hashing): the whole run ended in a traceback."""
    fake = organisation()
    job_id = fake.job_ids()[3]
    listed = fake.checkpoints(job_id)
    deep = "[" * depth + "]" * depth
    entry = json.dumps(listed[0])[:-1]
    spliced = f'{entry}, "nested": {deep}}}' if where == "extra" else f'{entry}, "{where}": {{"r": {deep}}}}}'
    others = "".join(f", {json.dumps(checkpoint)}" for checkpoint in listed[1:])
    body = f'{{"training_job": {json.dumps(fake.job(job_id))}, "checkpoints": [{spliced}{others}]}}'
    fake.override("GET", checkpoints_path(fake, job_id), body=body.encode())
    report = sync(archive, fake, key=KEY)
    assert_only_the_entry_failed(report, archive, fake, job_id)


# The database refuses a value the contract let through: what the isolation is for.
REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON {table} WHEN NEW.{column} = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.{column} = 'poison' THEN RAISE EXCEPTION 'refused' USING ERRCODE = 'program_limit_exceeded'; "
        "END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ],
}


def refuse_poison(engine: Engine, table: str, column: str) -> None:
    """Make the database refuse a row of `table` whose `column` is 'poison'."""
    with engine.begin() as connection:
        for statement in REFUSE[engine.dialect.name]:
            connection.exec_driver_sql(statement.format(table=table, column=column))


@pytest.mark.parametrize("streamed", [False, True], ids=["held", "read-as-a-stream"])
def test_a_job_whose_rows_the_database_refuses_fails_alone(
    archive: Engine, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    if streamed:  # every checkpoint listing left on disk and written a piece at a time, alone
        monkeypatch.setattr(client, "SPILL_BYTES", 0)
    fake = organisation()
    job_id = fake.job_ids()[4]
    serve_checkpoints(fake, job_id, lambda checkpoint: checkpoint.update(checkpoint_id="poison"))
    refuse_poison(archive, "checkpoints", "checkpoint_id")
    report = sync(archive, fake, key=KEY)
    assert_only_failed(report, archive, fake, job_id, "database")
    assert "the database refused its rows" in report.failures[0].message
    assert scalar(archive, "SELECT status FROM sync_runs") == "partial"
    assert scalar(archive, "SELECT jobs_fetched FROM sync_runs") == len(fake.job_ids()) - 1


def serve_poisoned_project(fake: FakeBaseten, project_id: str) -> None:
    """Serve `project_id` named 'poison' in the project listing and in its job listing."""
    project = fake.project(project_id) | {"name": "poison"}
    listed = [project if other == project_id else fake.project(other) for other in fake.project_ids()]
    fake.override("GET", "/v1/training_projects", body={"training_projects": listed})
    jobs = [fake.job(job_id) for job_id in fake.job_ids(project_id)]
    fake.override(
        "GET",
        f"/v1/training_projects/{project_id}/jobs",
        body={"training_project": project, "training_jobs": jobs},
    )


def test_a_project_whose_row_the_database_refuses_fails_alone(archive: Engine) -> None:
    fake = organisation()
    project_id = fake.project_ids()[0]
    serve_poisoned_project(fake, project_id)
    refuse_poison(archive, "training_projects", "name")
    report = sync(archive, fake, key=KEY)
    assert report.exit_code == 3
    assert [(f.project_id, f.job_id, f.kind) for f in report.failures] == [(project_id, None, "database")]
    assert errors(archive) == [(project_id, None, "database")]
    assert archived_jobs(archive) == set(fake.job_ids()) - set(fake.job_ids(project_id))


def test_listings_written_together_fail_alone_when_the_database_refuses_one(
    archive: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listings that came in while the writer was busy go in one transaction; if the database refuses
    one of them, the others are still written, each on its own, and only its project fails."""
    fake = organisation(projects=6)
    first, *others = sorted(fake.project_ids())  # written in the order of their ids
    poisoned = others[2]
    serve_poisoned_project(fake, poisoned)
    refuse_poison(archive, "training_projects", "name")
    parsed: set[str] = set()
    everyone_else = threading.Event()
    fetch_listing = ListingStep._fetch_listing

    def hold_the_first(step: ListingStep, project_id: str) -> Any:
        """The first project's listing is asked for once the others are read and parsed: all of them
        are then in together (a hook on the requests let the last one be parsed after the first)."""
        if project_id == first:
            assert everyone_else.wait(10)
            return fetch_listing(step, project_id)
        fetched = fetch_listing(step, project_id)
        parsed.add(project_id)
        if len(parsed) == len(others):
            everyone_else.set()
        return fetched

    monkeypatch.setattr(ListingStep, "_fetch_listing", hold_the_first)
    writes: list[list[str]] = []
    archive_ready = ListingStep._archive

    def recorded(step: ListingStep, answers: list[tuple[str, Any]], *args: Any) -> None:
        writes.append([project_id for project_id, _ in answers])
        archive_ready(step, answers, *args)

    monkeypatch.setattr(ListingStep, "_archive", recorded)
    report = sync(archive, fake, key=KEY)
    assert writes[0] == [first, *others]  # one write of all six, the held one first
    assert report.exit_code == 3
    assert [(f.project_id, f.job_id, f.kind) for f in report.failures] == [(poisoned, None, "database")]
    assert errors(archive) == [(poisoned, None, "database")]
    assert archived_jobs(archive) == set(fake.job_ids()) - set(fake.job_ids(poisoned))
    assert scalar(archive, "SELECT projects FROM sync_runs") == 5


# ------------------------------------------------------------------------------------------------
# a project the key may not read


def test_a_403_on_one_project_fails_that_project_and_the_run_goes_on(archive: Engine) -> None:
    fake = organisation()
    assert sync(archive, fake, key=KEY).exit_code == 0
    before = rows(archive, "SELECT id, deleted_at, valid_from FROM training_jobs ORDER BY id")
    forbidden = fake.project_ids()[1]
    fake.override("GET", f"/v1/training_projects/{forbidden}/jobs", 403, {"message": "not your team"})
    fake.add_project(jobs=1, checkpoints_per_job=1)
    report = sync(archive, fake, key=KEY)
    assert report.exit_code == 3
    assert [(f.project_id, f.kind) for f in report.failures] == [(forbidden, "forbidden")]
    assert "HTTP 403" in report.failures[0].message and "not your team" in report.failures[0].message
    assert (forbidden, None, "forbidden") in errors(archive)
    assert archived_jobs(archive) == set(fake.job_ids())  # the project added tonight too
    held = set(fake.job_ids(forbidden))
    after = rows(archive, "SELECT id, deleted_at, valid_from FROM training_jobs ORDER BY id")
    assert [row for row in after if row[0] in held] == [row for row in before if row[0] in held]


def test_a_403_on_the_project_listing_is_a_refused_key(database_url: str, engine: Engine) -> None:
    fake = organisation()
    fake.override("GET", "/v1/training_projects", 403, {"message": "no"})
    with serve(fake) as api:
        result = run_archiver("sync", env=sync_env(api, database_url, key=KEY))
    assert result.exit_code == 1 and "refused the API key (HTTP 403)" in result.stderr, result.output
    assert errors(engine) == [(None, None, "auth")]


# ------------------------------------------------------------------------------------------------
# the key refused midway


def refuse_after(fake: FakeBaseten, answered: int) -> None:
    """Answer 401 to every checkpoint listing after the first `answered`: the key was rotated midway."""
    seen: list[str] = []

    def hook(_method: str, path: str, _body: bytes) -> Response | None:
        if not path.endswith("/checkpoints"):
            return None
        seen.append(path)
        return None if len(seen) <= answered else Response.of(401, {"message": "Invalid API key"})

    fake.intercept(hook)


def test_a_key_refused_midway_is_fatal_but_keeps_what_was_fetched(database_url: str, engine: Engine) -> None:
    fake = organisation()
    refuse_after(fake, 3)
    with serve(fake) as api:
        result = run_archiver("sync", "--concurrency", "1", env=sync_env(api, database_url, key=KEY))
    assert result.exit_code == 1 and "refused the API key (HTTP 401)" in result.stderr, result.output
    assert len(archived_jobs(engine)) == 3
    assert rows(engine, "SELECT status, jobs_fetched FROM sync_runs") == [("failed", 3)]
    assert errors(engine) == [(None, None, "auth")]
    assert "refused the API key" in str(scalar(engine, "SELECT message FROM sync_errors"))


# ------------------------------------------------------------------------------------------------
# a role that may not create temporary tables


@pytest.fixture
def role_without_temp(postgres_url: str) -> Iterator[str]:
    """The scratch database's URL for a role that may create tables but not temporary ones."""
    url = sa.make_url(postgres_url)
    role = f"no_temp_{url.database}"
    admin = db.make_engine(postgres_url)
    grants = [
        f'CREATE ROLE "{role}" LOGIN',
        f'GRANT CONNECT, CREATE ON DATABASE "{url.database}" TO "{role}"',
        f'GRANT ALL ON SCHEMA public TO "{role}"',
        f'REVOKE TEMPORARY ON DATABASE "{url.database}" FROM PUBLIC',
        f'REVOKE TEMPORARY ON DATABASE "{url.database}" FROM "{role}"',
    ]
    with admin.begin() as connection:
        for statement in grants:
            connection.exec_driver_sql(statement)
    try:
        yield url.set(username=role).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
            connection.exec_driver_sql(f'REVOKE ALL ON DATABASE "{url.database}" FROM "{role}"')
            connection.exec_driver_sql(f'REVOKE ALL ON SCHEMA public FROM "{role}"')
            connection.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()


def test_a_role_without_temporary_privilege_syncs(role_without_temp: str) -> None:
    fake = organisation()
    with serve(fake) as api:
        result = run_archiver("sync", env=sync_env(api, role_without_temp, key=KEY))
        assert result.exit_code == 0, result.output
        # A job of enough checkpoints to be staged (`db.STAGE_MIN_ROWS`), were the role allowed to.
        fake.add_project(jobs=1, checkpoints_per_job=db.STAGE_MIN_ROWS)
        again = run_archiver("sync", "--full", "-vv", env=sync_env(api, role_without_temp, key=KEY))
    assert again.exit_code == 0, again.output
    assert "may not create temporary tables" in again.stderr
    engine = db.make_engine(role_without_temp)
    try:
        assert archived_jobs(engine) == set(fake.job_ids())
        expected = sum(len(fake.checkpoints(job_id)) for job_id in fake.job_ids())
        assert scalar(engine, "SELECT COUNT(*) FROM checkpoints") == expected > db.STAGE_MIN_ROWS
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------------
# an echoed key


def escaped(text: str) -> str:
    """`text` as a JSON string whose hyphens are escapes: the bytes never spell it, the value does."""
    return '"' + text.replace("-", "\\u002d") + '"'


def stored_bodies(engine: Engine) -> str:
    """Every kept response body, decompressed."""
    with engine.connect() as connection:
        bodies = connection.scalars(sa.text("SELECT body FROM api_response_bodies")).all()
    return "\n".join(zlib.decompress(body).decode() for body in bodies)


def test_an_echoed_key_leaves_the_process_nowhere(database_url: str, engine: Engine) -> None:
    fake = organisation()
    wrong_type, error_body, plain = fake.job_ids()[:3]
    # A wrongly typed value that is the key, its JSON escaped; the key in a 400's body; the key as sent.
    body = json.dumps({"training_job": fake.job(wrong_type), "checkpoints": fake.checkpoints(wrong_type)})
    body = body.replace(
        f'"size_bytes": {fake.checkpoints(wrong_type)[0]["size_bytes"]}', f'"size_bytes": {escaped(KEY)}', 1
    )
    fake.override("GET", checkpoints_path(fake, wrong_type), body=body.encode())
    fake.override(
        "GET",
        checkpoints_path(fake, error_body),
        400,
        f'{{"message": {escaped("bad header Api-Key " + KEY)}}}'.encode(),
        headers={"X-Echo": KEY},
    )
    serve_checkpoints(fake, plain, lambda checkpoint: checkpoint.update(base_model=[f"Api-Key {KEY}"]))
    outputs: list[Result] = []
    with serve(fake) as api:
        for args in [("-vv",), ("-vv", "--log-format", "json")]:
            outputs.append(
                result := run_archiver("sync", "--full", *args, env=sync_env(api, database_url, key=KEY))
            )
            assert result.exit_code == 3, result.output
    assert "<api key>" in outputs[0].stderr and wrong_type in outputs[0].stderr
    for result in outputs:
        assert KEY not in result.output, result.output
    failed = {job_id for _, job_id, _ in errors(engine)}
    assert failed == {wrong_type, error_body, plain}
    assert KEY not in every_text(engine)
    assert KEY not in stored_bodies(engine) and "<api key>" in stored_bodies(engine)


def test_a_key_echoed_in_a_content_type_is_kept_nowhere(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Only a response's media type and charset are kept of its Content-Type: a key beside them is not."""
    fake = organisation()
    listing = {"training_projects": [fake.project(pid) for pid in fake.project_ids()]}
    echoed = f"application/json; charset=utf-8; token={KEY}; echo={KEY.upper()}"
    fake.override("GET", "/v1/training_projects", body=listing, headers={"Content-Type": echoed})
    with serve(fake) as api:
        result = run_archiver("sync", "-vv", env=sync_env(api, database_url, key=KEY))
    assert result.exit_code == 0, result.output
    kept = set(rows(engine, "SELECT DISTINCT content_type FROM api_response_bodies"))
    assert ("application/json; charset=utf-8",) in kept and KEY not in every_text(engine)
    assert KEY.upper() not in every_text(engine) and KEY not in result.output
    if engine.dialect.name == "sqlite":  # a backup copies what the archive holds, and nothing more
        copy = tmp_path / "copy.db"
        assert run_archiver("db", "backup", str(copy), "--database-url", database_url).exit_code == 0
        assert KEY.encode() not in copy.read_bytes()


def test_a_long_bad_value_is_quoted_short(archive: Engine) -> None:
    fake = organisation()
    job_id = fake.job_ids()[0]
    serve_checkpoints(fake, job_id, lambda checkpoint: checkpoint.update(size_bytes="9" * 10_000))
    report = sync(archive, fake, key=KEY)
    (failure,) = report.failures
    assert f"got str '{'9' * 79}…" in failure.message and len(failure.message) < 200
