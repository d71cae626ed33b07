"""`archiver query` and `archiver report`: the real command, read-only, in every format."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from archiver import db, migrate, query
from archiver.cli import cli
from archiver.errors import QueryError
from archiver.output import render

from .support import fakes
from .support.commands import Result, run_archiver
from .support.databases import scalar
from .support.orgs import ArchivedOrg, archive_org
from .support.payloads import CHECKPOINTS, JOB, project_for
from .support.standby import hot_standby

SIZES = "SELECT job_id, checkpoint_id, size_bytes FROM checkpoint_facts ORDER BY job_id, checkpoint_id"


@pytest.fixture
def org(archive: Engine) -> ArchivedOrg:
    return archive_org(archive)


def archiver(database_url: str, *args: str) -> Result:
    return run_archiver(*args, env={"ARCHIVER_DATABASE_URL": database_url})


def served_sizes(org: ArchivedOrg) -> list[tuple[str, str, int]]:
    return sorted(
        (j, c["checkpoint_id"], c["size_bytes"]) for j, s in org.jobs.items() for c in s.checkpoints
    )


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM checkpoints",
        "  -- a comment first\n  update checkpoints SET size_bytes = 0",
        "WITH doomed AS (SELECT 1) UPDATE checkpoints SET size_bytes = 0",
        "SELECT 1; DELETE FROM checkpoints",
        "SELECT 1; COMMIT; DELETE FROM checkpoints",
    ],
)
def test_query_refuses_writes_and_writes_nothing(
    org: ArchivedOrg, database_url: str, archive: Engine, statement: str
) -> None:
    result = archiver(database_url, "query", statement)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "only reads" in result.stderr or "one statement at a time" in result.stderr
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints WHERE size_bytes > 0") == len(served_sizes(org))


def test_query_formats(org: ArchivedOrg, database_url: str) -> None:
    expected = served_sizes(org)
    as_csv = archiver(database_url, "query", "--format", "csv", SIZES)
    assert as_csv.exit_code == 0, as_csv.output
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["job_id", "checkpoint_id", "size_bytes"],
        *[[j, c, str(size)] for j, c, size in expected],
    ]
    as_json = json.loads(archiver(database_url, "query", "--format", "json", SIZES).stdout)
    assert as_json == [{"job_id": j, "checkpoint_id": c, "size_bytes": s} for j, c, s in expected]
    lines = archiver(database_url, "query", "--format", "jsonl", SIZES).stdout.splitlines()
    assert [json.loads(line) for line in lines] == as_json

    table = archiver(database_url, "query", SIZES).stdout.splitlines()
    assert table[0].split() == ["job_id", "checkpoint_id", "size_bytes"]
    assert "\x1b[" not in "".join(table)  # no colour when stdout is not a terminal
    assert len(table) == 2 + len(expected)
    assert len({len(line) for line in table[1:]}) == 1  # aligned: sizes are right-justified
    assert table[2].split()[2:] == render(["size_bytes"], [[expected[0][2]]]).splitlines()[2].split()
    assert table[2].split()[-1] in ("B", "KiB", "MiB", "GiB", "TiB")


def test_query_timestamps_read_the_same_on_both_databases(org: ArchivedOrg, database_url: str) -> None:
    result = archiver(
        database_url, "query", "--format", "jsonl", "SELECT first_seen_at FROM checkpoints LIMIT 1"
    )
    assert json.loads(result.stdout) == {"first_seen_at": "2026-06-01T12:30:00+00:00"}


def test_query_errors_say_what_to_change(org: ArchivedOrg, database_url: str) -> None:
    result = archiver(database_url, "query", "SELECT nope FROM checkpoint_fact")
    assert result.exit_code == 2
    assert "checkpoint_fact" in result.stderr and "checkpoint_facts, job_facts" in result.stderr
    assert archiver(database_url, "query", "   ").exit_code == 2


def test_query_needs_an_archive_and_never_creates_one(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    empty = archiver(database_url, "query", "SELECT 1")
    assert empty.exit_code == 1 and "archiver sync" in empty.stderr
    assert sa.inspect(engine).get_table_names() == []
    missing = tmp_path / "typo.db"
    result = archiver(f"sqlite:///{missing}", "query", "SELECT 1")
    assert result.exit_code == 1 and "no archive at" in result.stderr
    assert not missing.exists()


def test_query_refuses_an_old_schema_with_the_fix(database_url: str, engine: Engine) -> None:
    migrate.upgrade(engine, "0002")
    result = archiver(database_url, "query", "SELECT 1")
    assert result.exit_code == 1 and "archiver db upgrade" in result.stderr
    assert migrate.current_revision(engine) == "0002"


def test_the_connection_is_writable_again_after_a_query(org: ArchivedOrg, archive: Engine) -> None:
    with query.results(archive, "SELECT COUNT(*) FROM checkpoints") as result:
        assert list(result.rows) == [(len(served_sizes(org)),)]
    write = "WITH doomed AS (SELECT 1) DELETE FROM checkpoints"
    with pytest.raises(QueryError, match="refused a write"), query.results(archive, write) as result:
        list(result.rows)
    with archive.begin() as connection:
        connection.execute(sa.text("UPDATE checkpoints SET sync_status = sync_status"))


def test_report_storage(org: ArchivedOrg, database_url: str) -> None:
    result = archiver(database_url, "report", "storage", "--format", "json")
    assert result.exit_code == 0, result.output
    by_project: dict[str, list[int]] = {}
    for job_id, served in org.jobs.items():
        totals = by_project.setdefault(served.project["id"], [0, 0, 0, 0])
        for c in served.checkpoints:
            live = org.checkpoint_deleted_at(job_id, c["checkpoint_id"]) is None
            totals[0] += live
            totals[1] += c["size_bytes"] if live else 0
            totals[2] += 1
            totals[3] += c["size_bytes"]
    rows = json.loads(result.stdout)
    assert {
        r["project_id"]: [
            r["live_checkpoints"],
            r["live_size_bytes"],
            r["archived_checkpoints"],
            r["archived_size_bytes"],
        ]
        for r in rows
    } == by_project
    assert [r["live_size_bytes"] for r in rows] == sorted((r["live_size_bytes"] for r in rows), reverse=True)
    assert [r["project_id"] for r in rows if r["project_deleted_at"]] == [org.deleted_project]
    assert "GiB" in archiver(database_url, "report", "storage").stdout


def test_report_jobs_by_status_and_since(org: ArchivedOrg, database_url: str) -> None:
    failed = sorted(j for j, s in org.jobs.items() if s.job["current_status"] == "TRAINING_JOB_FAILED")
    assert failed
    for status in ("FAILED", "failed", "TRAINING_JOB_FAILED"):
        result = archiver(database_url, "report", "jobs", "--status", status, "--format", "json")
        assert result.exit_code == 0, result.output
        assert sorted(r["job_id"] for r in json.loads(result.stdout)) == failed
    recent = archiver(database_url, "report", "jobs", "--since", "7d", "--format", "json")
    assert json.loads(recent.stdout) == []  # the fake organisation's jobs last changed in January 2026
    since = archiver(database_url, "report", "jobs", "--since", "2026-01-10", "--format", "jsonl")
    assert {json.loads(line)["job_id"] for line in since.stdout.splitlines()} == {
        j for j, s in org.jobs.items() if s.job["updated_at"] >= "2026-01-10"
    }
    bad = archiver(database_url, "report", "jobs", "--since", "last tuesday")
    assert bad.exit_code == 2 and "7d" in bad.stderr


def test_report_checkpoints(org: ArchivedOrg, database_url: str) -> None:
    job_id, checkpoint_id = org.deleted_checkpoint
    result = archiver(database_url, "report", "checkpoints", "--job", job_id, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["checkpoint_id"] for r in rows] == [c["checkpoint_id"] for c in org.jobs[job_id].checkpoints]
    assert [r["checkpoint_id"] for r in rows if r["deleted_at"]] == [checkpoint_id]
    unknown = archiver(database_url, "report", "checkpoints", "--job", "nosuchjob")
    assert unknown.exit_code == 2 and "nosuchjob" in unknown.stderr and "report jobs" in unknown.stderr


@pytest.mark.parametrize("since", ["99999999w", "9999999999999d", "0001-01-01T00:00:00+01:00"])
def test_a_since_too_far_back_is_a_usage_error_not_a_traceback(tmp_path: Path, since: str) -> None:
    result = CliRunner().invoke(
        cli, ["report", "jobs", "--since", since, "--database-url", f"sqlite:///{tmp_path / 'a.db'}"]
    )
    assert not isinstance(result.exception, OverflowError), result.exception
    assert result.exit_code == 2 and "--since" in result.output


def test_query_prints_json_columns_alike_on_both_databases(
    request: pytest.FixtureRequest, database_url: str, archive: Engine
) -> None:
    if database_url.startswith("sqlite"):
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="on SQLite `archiver query` sees a JSON column as text (sqlite3 reports no column "
                "types), so --format json prints a string where PostgreSQL prints the list; telling JSON "
                "text from a name that looks like JSON needs the declared column type, which the driver "
                "does not expose",
            )
        )
    job = copy.deepcopy(JOB)
    body = {"training_job": job, "checkpoints": CHECKPOINTS}
    assert not fakes.sync(archive, fakes.one_listing(project_for("n4q95w5", "p"), job, body)).failures
    sql = "SELECT lora_target_modules FROM checkpoint_facts WHERE lora_r IS NOT NULL"
    result = run_archiver("query", "--format", "json", sql, env={"ARCHIVER_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"lora_target_modules": ["q_proj", "v_proj"]}]


COUNT_FOREVER = (
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000000000) "
    "SELECT COUNT(*) FROM c"
)


@pytest.mark.parametrize(
    "command", [("query", COUNT_FOREVER), ("query", "--as-of", "2026-06-02", COUNT_FOREVER)]
)
def test_a_query_that_runs_past_its_timeout_is_stopped(
    archive: Engine, database_url: str, command: tuple[str, ...]
) -> None:
    """A runaway statement ran until someone killed it (on PostgreSQL, holding a connection and a snapshot)."""
    result = archiver(database_url, *command[:-1], "--timeout", "1s", command[-1])
    assert result.exit_code == 124, result.output
    assert result.stdout == ""
    said = [line for line in result.stderr.splitlines() if "the archive has no sync yet" not in line]
    assert said == [
        "error: query stopped after 1 second (--timeout): narrow it (a WHERE, a LIMIT, a view), "
        "or give it longer with --timeout (0 for no limit)"
    ]


def test_pg_sleep_is_stopped_by_the_statement_timeout_in_a_read_only_transaction(
    postgres_url: str,
) -> None:
    engine = db.make_engine(postgres_url)
    migrate.upgrade(engine)
    engine.dispose()
    stopped = archiver(postgres_url, "query", "--timeout", "1s", "SELECT pg_sleep(5)")
    assert stopped.exit_code == 124 and "query stopped after 1 second (--timeout)" in stopped.stderr
    settings = (
        "SELECT current_setting('statement_timeout') AS t, current_setting('transaction_read_only') AS ro"
    )
    limited = archiver(postgres_url, "query", "--format", "json", "--timeout", "90s", settings)
    assert json.loads(limited.stdout) == [{"t": "90s", "ro": "on"}]
    default = archiver(postgres_url, "query", "--format", "json", settings)
    assert json.loads(default.stdout) == [{"t": "1min", "ro": "on"}]
    unlimited = archiver(postgres_url, "query", "--format", "json", "--timeout", "none", settings)
    assert json.loads(unlimited.stdout) == [{"t": "0", "ro": "on"}]


def test_a_stricter_statement_timeout_of_the_database_stays_in_force(postgres_url: str) -> None:
    """--timeout 60s used to replace a database's 1s statement_timeout with its own, looser one."""
    engine = db.make_engine(postgres_url)
    migrate.upgrade(engine)
    name = engine.url.database
    with engine.connect() as connection:
        connection.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET statement_timeout = '1s'")
        connection.commit()
    engine.dispose()
    setting = "SELECT current_setting('statement_timeout') AS t"
    kept = archiver(postgres_url, "query", "--format", "json", "--timeout", "60s", setting)
    assert json.loads(kept.stdout) == [{"t": "1s"}]
    stricter = archiver(postgres_url, "query", "--format", "json", "--timeout", "0.5", setting)
    assert json.loads(stricter.stdout) == [{"t": "500ms"}]
    stopped = archiver(postgres_url, "query", "--timeout", "60s", "SELECT pg_sleep(5)")
    assert stopped.exit_code == 124, stopped.output
    assert "query stopped after 1 second by the database's own statement_timeout" in stopped.stderr


@pytest.mark.parametrize("timeout", ["0", "none"])
def test_a_timeout_of_0_or_none_is_no_limit(archive: Engine, database_url: str, timeout: str) -> None:
    counted = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) SELECT COUNT(*) AS n FROM c"
    result = archiver(database_url, "query", "--format", "json", "--timeout", timeout, counted)
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"n": 1000}]


@pytest.mark.parametrize("timeout", ["-1s", "soon", "1e400", ""])
def test_a_timeout_that_is_no_duration_is_a_usage_error(
    archive: Engine, database_url: str, timeout: str
) -> None:
    result = archiver(database_url, "query", "--timeout", timeout, "SELECT 1")
    assert (
        result.exit_code == 2
        and "Invalid value for --timeout: expected a duration such as 30s" in result.stderr
    )


def test_reports_take_a_timeout_too(org: ArchivedOrg, database_url: str) -> None:
    for report in (["storage"], ["jobs"], ["checkpoints", "--job", next(iter(org.jobs))]):
        result = archiver(database_url, "report", *report, "--timeout", "30s", "--format", "json")
        assert result.exit_code == 0 and json.loads(result.stdout), result.output


def test_as_of_on_an_archive_never_synced_says_so(archive: Engine, database_url: str) -> None:
    result = archiver(
        database_url,
        "query",
        "--as-of",
        "2026-06-02",
        "--format",
        "csv",
        "SELECT COUNT(*) AS n FROM checkpoints",
    )
    assert result.exit_code == 0 and result.stdout.split() == ["n", "0"], result.output
    assert result.stderr.splitlines() == [
        "warning: --as-of 2026-06-02T00:00:00+00:00: the archive has no sync yet, so it held nothing then"
    ]


def test_as_of_needs_no_temporary_privilege_and_runs_read_only(postgres_url: str) -> None:
    """`query --as-of` made temporary views: a reader without TEMPORARY, in read-only transactions (a hot
    standby refuses the same), could not ask about the past at all."""
    engine = db.make_engine(postgres_url)
    url = sa.make_url(postgres_url)
    reader = f"past_reader_{url.database}"
    try:
        migrate.upgrade(engine)
        archive_org(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql(f'CREATE ROLE "{reader}" LOGIN')
            connection.exec_driver_sql(f'REVOKE TEMPORARY ON DATABASE "{url.database}" FROM PUBLIC')
            connection.exec_driver_sql(f'ALTER ROLE "{reader}" SET default_transaction_read_only = on')
        assert run_archiver("db", "grant-read", reader, "--database-url", postgres_url).exit_code == 0
        reader_url = url.set(username=reader).render_as_string(hide_password=False)
        asked = (
            "WITH live AS (SELECT * FROM checkpoint_facts WHERE deleted_at IS NULL) SELECT COUNT(*) FROM live"
        )
        between_nights = "2026-06-02"  # after the first sync of archive_org, before the second
        ask = ("query", "--as-of", between_nights, "--format", "csv", asked, "--database-url")
        result = run_archiver(*ask, reader_url)
        assert result.exit_code == 0, result.output
        owner = run_archiver(*ask, postgres_url)
        assert owner.exit_code == 0 and owner.stdout == result.stdout
        (count,) = list(csv.reader(io.StringIO(result.stdout)))[1:][0]
        now = run_archiver("query", "--format", "csv", asked, "--database-url", reader_url)
        assert int(count) > 0 and now.stdout != result.stdout  # the past, not today
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP OWNED BY "{reader}"')
            connection.exec_driver_sql(f'DROP ROLE "{reader}"')
            connection.exec_driver_sql(f'GRANT TEMPORARY ON DATABASE "{url.database}" TO PUBLIC')
        engine.dispose()


def test_as_of_answers_on_a_hot_standby_as_on_its_primary() -> None:
    """A hot standby takes no writes at all, temporary views included; `query --as-of` reads it all the same."""
    with hot_standby() as pair:
        primary = db.make_engine(pair.primary_url)
        try:
            archive_org(primary)
        finally:
            primary.dispose()
        pair.caught_up()
        standby = db.make_engine(pair.standby_url)
        try:
            with standby.connect() as connection:
                assert connection.exec_driver_sql("SELECT pg_is_in_recovery()").scalar() is True
                with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
                    connection.exec_driver_sql("CREATE TEMPORARY VIEW probe AS SELECT 1")
        finally:
            standby.dispose()
        asked = (
            "SELECT (SELECT COUNT(*) FROM checkpoint_facts WHERE deleted_at IS NULL) AS live, "
            "(SELECT COUNT(*) FROM checkpoint_versions) AS versions, (SELECT COUNT(*) FROM sync_runs) AS runs"
        )
        ask = ("query", "--as-of", "2026-06-02", "--format", "csv", asked, "--database-url")
        on_standby = run_archiver(*ask, pair.standby_url)
        assert on_standby.exit_code == 0, on_standby.output
        assert on_standby.stdout == run_archiver(*ask, pair.primary_url).stdout
        assert list(csv.reader(io.StringIO(on_standby.stdout)))[1][2] == "1"  # the first night's run only
        now = run_archiver("query", "--format", "csv", asked, "--database-url", pair.standby_url)
        assert now.exit_code == 0 and now.stdout != on_standby.stdout
