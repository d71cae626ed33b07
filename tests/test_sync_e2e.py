"""The real `archiver` command against the fake Baseten API over loopback, into both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from archiver import db, demo, migrate
from archiver.cli import cli
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, Faults, OrgSpec, play_until, serve
from archiver.schema import SCHEMA_REVISION

from .support import fakes
from .support.commands import Result, run_archiver, sync_env
from .support.databases import rows, scalar

SPEC = OrgSpec(seed=7, projects=3, jobs_per_project=4, checkpoints_per_job=5)


@pytest.fixture
def fake() -> FakeBaseten:
    return FakeBaseten(SPEC)


@pytest.fixture
def api_url(fake: FakeBaseten) -> Iterator[str]:
    with serve(fake) as url:
        yield url


def sync(api_url: str, database_url: str, *args: str, key: str = DEFAULT_API_KEY) -> Result:
    return run_archiver("sync", *args, env=sync_env(api_url, database_url, key))


def archived_checkpoints(engine: Engine) -> dict[tuple[str, str], tuple[object, ...]]:
    found = rows(
        engine,
        "SELECT training_job_id, checkpoint_id, size_bytes, checkpoint_type, sync_status FROM checkpoints",
    )
    return {(str(row[0]), str(row[1])): row[2:] for row in found}


def served_checkpoints(fake: FakeBaseten) -> dict[tuple[str, str], tuple[object, ...]]:
    return {
        (job_id, c["checkpoint_id"]): (c["size_bytes"], c["checkpoint_type"].lower(), c.get("sync_status"))
        for job_id in fake.job_ids()
        for c in fake.checkpoints(job_id)
    }


def test_sync_archives_everything_served_and_a_second_run_changes_nothing(
    fake: FakeBaseten, api_url: str, database_url: str, engine: Engine
) -> None:
    first = sync(api_url, database_url)
    assert first.exit_code == 0, first.output
    total = fake.total_checkpoints()
    assert f"checkpoints {total} inserted, 0 updated, 0 unchanged, 0 marked deleted; 0 failed" in first.stdout
    assert archived_checkpoints(engine) == served_checkpoints(fake)
    assert {r[0] for r in rows(engine, "SELECT id FROM training_projects")} == set(fake.project_ids())
    assert {r[0] for r in rows(engine, "SELECT id FROM training_jobs")} == set(fake.job_ids())
    statuses = {
        job_id: status for job_id, status in rows(engine, "SELECT id, current_status FROM training_jobs")
    }
    assert statuses == {job_id: fake.job(job_id)["current_status"] for job_id in fake.job_ids()}
    assert scalar(engine, "SELECT COUNT(*) FROM instance_types") == len(
        {fake.job(j)["instance_type"]["id"] for j in fake.job_ids()}
    )
    configs = {
        str(sorted(c["lora_adapter_config"].items()))
        for j in fake.job_ids()
        for c in fake.checkpoints(j)
        if c.get("lora_adapter_config")
    }
    assert scalar(engine, "SELECT COUNT(*) FROM lora_adapter_configs") == len(configs)

    before = rows(
        engine, "SELECT training_job_id, checkpoint_id, first_seen_at FROM checkpoints ORDER BY 1, 2"
    )
    second = sync(api_url, database_url, "--full")
    assert second.exit_code == 0, second.output
    assert (
        f"checkpoints 0 inserted, 0 updated, {total} unchanged, 0 marked deleted; 0 failed" in second.stdout
    )
    assert (
        rows(engine, "SELECT training_job_id, checkpoint_id, first_seen_at FROM checkpoints ORDER BY 1, 2")
        == before
    )


def test_changes_are_updated_in_place(
    fake: FakeBaseten, api_url: str, database_url: str, engine: Engine
) -> None:
    assert sync(api_url, database_url).exit_code == 0
    job_id = fake.job_ids()[0]
    checkpoint = fake.checkpoints(job_id)[0]["checkpoint_id"]
    fake.update_checkpoint(job_id, checkpoint, size_bytes=3 * 2**40)
    fake.add_checkpoint(job_id)
    result = sync(api_url, database_url)
    assert result.exit_code == 0, result.output
    assert "checkpoints 1 inserted, 1 updated," in result.stdout
    assert archived_checkpoints(engine)[(job_id, checkpoint)][0] == 3 * 2**40


def test_scope_options_limit_the_run(
    fake: FakeBaseten, api_url: str, database_url: str, engine: Engine
) -> None:
    project = fake.project_ids()[1]
    other_job = fake.job_ids(fake.project_ids()[2])[0]
    result = sync(api_url, database_url, "--project", project, "--job", other_job)
    assert result.exit_code == 0, result.output
    archived_jobs = {r[0] for r in rows(engine, "SELECT id FROM training_jobs")}
    assert archived_jobs == set(fake.job_ids(project)) | {other_job}
    assert fake.request_count("/v1/training_jobs/search") == 1


def test_a_broken_entry_fails_alone_with_a_clear_message(database_url: str, engine: Engine) -> None:
    healthy = FakeBaseten(SPEC)
    broken_job = healthy.job_ids()[3]
    project = healthy.job(broken_job)["training_project_id"]
    fake = FakeBaseten(SPEC, faults=Faults(broken_jobs={broken_job: "wrong-type"}))
    with serve(fake) as url:
        result = sync(url, database_url)
    assert result.exit_code == 3, result.output
    assert f"project {project}, job {broken_job}" in result.stderr and "size_bytes" in result.stderr
    # One broken entry fails alone: the job's other checkpoints are archived, the broken one is not.
    bad = (broken_job, fake.checkpoints(broken_job)[0]["checkpoint_id"])
    expected = {k: v for k, v in served_checkpoints(fake).items() if k != bad}
    assert archived_checkpoints(engine) == expected
    assert scalar(engine, "SELECT COUNT(*) FROM rejected_entries WHERE job_id = :j", j=broken_job) == 1


def test_a_refused_key_exits_1_and_writes_nothing(api_url: str, database_url: str, engine: Engine) -> None:
    result = sync(api_url, database_url, key="wrong-key-d41d8cd9")
    assert result.exit_code == 1
    assert "refused the API key" in result.stderr and "wrong-key-d41d8cd9" not in result.output
    assert scalar(engine, "SELECT COUNT(*) FROM training_projects") == 0


def test_an_unreachable_api_exits_1(database_url: str) -> None:
    result = run_archiver(
        "sync",
        "--max-attempts",
        "2",
        env=sync_env("http://127.0.0.1:9", database_url, key="k"),
    )
    assert result.exit_code == 1
    assert "cannot list training projects" in result.stderr


def test_an_unreachable_database_exits_1_before_any_request(fake: FakeBaseten, api_url: str) -> None:
    url = "postgresql://archiver:hunter2-secret@127.0.0.1:9/archive"
    result = sync(api_url, url)
    assert result.exit_code == 1
    assert "cannot connect to the database" in result.stderr
    assert "that the server 127.0.0.1:9 is up" in result.stderr
    assert "hunter2-secret" not in result.output
    assert fake.request_count() == 0


def test_a_sqlite_file_that_cannot_be_made_names_its_directory_not_a_server(
    fake: FakeBaseten, api_url: str, tmp_path: Path
) -> None:
    result = sync(api_url, f"sqlite:///{tmp_path}/missing/archive.db")
    assert result.exit_code == 1
    assert f"that the directory {tmp_path}/missing exists" in result.stderr
    assert "server" not in result.stderr
    assert fake.request_count() == 0


def test_the_database_password_never_appears(fake: FakeBaseten, api_url: str, postgres_url: str) -> None:
    with_password = sa.make_url(postgres_url).set(password="pw-7c1e-never-print").render_as_string(False)
    result = sync(api_url, with_password, "-v")
    assert result.exit_code == 0, result.output
    assert "pw-7c1e-never-print" not in result.output
    result = run_archiver("db", "current", env={"ARCHIVER_DATABASE_URL": with_password})
    assert result.exit_code == 0 and "pw-7c1e-never-print" not in result.output


def test_an_old_schema_is_refused_until_upgraded(api_url: str, database_url: str, engine: Engine) -> None:
    migrate.upgrade(engine, "0001")
    result = sync(api_url, database_url)
    assert result.exit_code == 1
    assert "archiver db upgrade" in result.stderr and "--migrate" in result.stderr
    assert sync(api_url, database_url, "--migrate").exit_code == 0
    assert migrate.current_revision(engine) == SCHEMA_REVISION


def test_db_commands(database_url: str, engine: Engine) -> None:
    env = {"ARCHIVER_DATABASE_URL": database_url}
    up = run_archiver("db", "upgrade", env=env)
    assert up.exit_code == 0, up.output
    assert migrate.current_revision(engine) == SCHEMA_REVISION
    assert "up to date" in run_archiver("db", "current", env=env).stdout
    down = run_archiver("db", "downgrade", "base", env=env)
    assert down.exit_code == 0, down.output
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}


def test_usage_errors_exit_2(database_url: str) -> None:
    assert run_archiver("sync", "--no-such-option").exit_code == 2
    result = run_archiver("sync", env={"ARCHIVER_DATABASE_URL": database_url})
    assert result.exit_code == 2 and "BASETEN_API_KEY" in result.stderr


def test_api_key_file(
    fake: FakeBaseten, api_url: str, database_url: str, tmp_path: Path, engine: Engine
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(DEFAULT_API_KEY + "\n")
    result = run_archiver(
        "sync",
        "--api-key-file",
        str(key_file),
        env={"BASETEN_API_URL": api_url, "ARCHIVER_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    assert scalar(engine, "SELECT COUNT(*) FROM checkpoints") == fake.total_checkpoints()


def test_demo_runs_on_a_fresh_directory(tmp_path: Path) -> None:
    result = run_archiver("demo", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("; 0 failed;") == 3 and "Storage by project as of night 0" in result.stdout
    engine = db.make_engine(f"sqlite:///{tmp_path / 'archiver-demo.db'}")
    after = demo.organisation()
    play_until(after, 2)
    assert (
        scalar(engine, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NULL")
        == after.total_checkpoints()
    )
    engine.dispose()


def test_the_demo_never_writes_into_the_archive_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ARCHIVER_DATABASE_URL set (as the README's cron setup does), `archiver demo` wrote its
    fake organisation into the real archive, where the next sync marked it all deleted, for good."""
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "real-archive.db"
    result = CliRunner().invoke(cli, ["demo"], env={"ARCHIVER_DATABASE_URL": f"sqlite:///{real}"})
    assert result.exit_code == 0, result.output
    assert not real.exists()
    assert (tmp_path / "archiver-demo.db").exists()


def test_downgrade_to_base_works_on_an_archive_with_data(database_url: str, archive: Engine) -> None:
    # SQLite: batch mode rebuilt training_jobs by dropping it while checkpoints referred to it,
    # and the user saw "database error: IntegrityError: FOREIGN KEY constraint failed".
    fake = FakeBaseten(OrgSpec(seed=3, projects=2, jobs_per_project=2, checkpoints_per_job=2))
    assert fakes.sync(archive, fake).exit_code == 0
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints") == fake.total_checkpoints() > 0
    result = run_archiver("db", "downgrade", "base", "--yes", env={"ARCHIVER_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert migrate.current_revision(archive) is None
    assert [t for t in sa.inspect(archive).get_table_names() if t != "alembic_version"] == []
