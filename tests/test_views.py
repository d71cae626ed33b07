"""The BI views, value by value, against expectations computed from what the fake API served."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import migrate
from archiver.fake_api import TERMINAL_STATUSES
from archiver.normalize import Where, parse_timestamp
from archiver.views import VIEWS, checkpoint_facts, job_facts, project_storage_daily

from .orgs import NIGHTS, Org, archive_org

GIB = 2**30
HOUR = timedelta(hours=1)


@pytest.fixture
def org(archive: Engine) -> Org:
    return archive_org(archive)


def ts(text: str | None) -> datetime | None:
    return None if text is None else parse_timestamp(text, Where())


def read(engine: Engine, view: sa.Table, *, timezone: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        if timezone and connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SET TIME ZONE '{timezone}'")
        return [dict(row._mapping) for row in connection.execute(sa.select(view))]


def test_views_have_exactly_the_declared_columns(archive: Engine) -> None:
    inspector = sa.inspect(archive)
    assert set(inspector.get_view_names()) == {view.name for view in VIEWS}
    for view in VIEWS:
        reported = inspector.get_columns(view.name)
        assert [c["name"] for c in reported] == list(view.columns.keys())
        if archive.dialect.name == "postgresql":  # SQLite gives a view's computed columns no type
            declared = [column.type.compile(archive.dialect) for column in view.columns]
            assert [c["type"].compile(archive.dialect) for c in reported] == declared, view.name


def test_checkpoint_facts(org: Org, archive: Engine) -> None:
    expected = {}
    for job_id, served in org.jobs.items():
        job, project, itype = served.job, served.project, served.job["instance_type"]
        for c in served.checkpoints:
            lora = c.get("lora_adapter_config") or {}
            expected[(job_id, c["checkpoint_id"])] = {
                "project_id": project["id"],
                "project_name": project["name"],
                "team_name": project["team_name"],
                "job_id": job_id,
                "job_name": job["name"],
                "checkpoint_id": c["checkpoint_id"],
                "checkpoint_type": c["checkpoint_type"],
                "created_at": ts(c["created_at"]),
                "size_bytes": c["size_bytes"],
                "size_gib": pytest.approx(c["size_bytes"] / GIB),
                "sync_status": c.get("sync_status"),
                "base_model": c["base_model"],
                "lora_r": lora.get("r"),
                "lora_alpha": lora.get("lora_alpha"),
                "lora_dropout": lora.get("lora_dropout"),
                "lora_target_modules": lora.get("target_modules"),
                "job_status": job["current_status"],
                "job_creator_email": (job["user"] or {}).get("email"),
                "job_created_at": ts(job["created_at"]),
                "instance_type_name": itype["name"],
                "gpu_type": itype["gpu_type"],
                "gpu_count": itype["gpu_count"],
                "first_seen_at": NIGHTS[0],
                "last_seen_at": NIGHTS[0]
                if org.checkpoint_deleted_at(job_id, c["checkpoint_id"])
                else NIGHTS[1],
                "deleted_at": org.checkpoint_deleted_at(job_id, c["checkpoint_id"]),
                "project_deleted_at": NIGHTS[1] if project["id"] == org.deleted_project else None,
            }
    found = {(row["job_id"], row["checkpoint_id"]): row for row in read(archive, checkpoint_facts)}
    assert found.keys() == expected.keys()
    for key, row in found.items():
        assert row == expected[key], key


def test_job_facts(org: Org, archive: Engine) -> None:
    now = datetime.now(UTC)
    found = {row["job_id"]: row for row in read(archive, job_facts)}
    assert found.keys() == org.jobs.keys()
    for job_id, served in org.jobs.items():
        job, project, itype = served.job, served.project, served.job["instance_type"]
        cps = served.checkpoints
        live = [c for c in cps if org.checkpoint_deleted_at(job_id, c["checkpoint_id"]) is None]
        latest = max(cps, key=lambda c: ts(c["created_at"]), default=None)  # type: ignore[arg-type,return-value]
        created, updated = ts(job["created_at"]), ts(job["updated_at"])
        assert created is not None and updated is not None
        first = min((ts(c["created_at"]) for c in cps), default=None)  # type: ignore[type-var]
        last = max((ts(c["created_at"]) for c in cps), default=None)  # type: ignore[type-var]
        terminal = job["current_status"] in TERMINAL_STATUSES
        wall = (updated - created) / HOUR if terminal else None
        nodes = job.get("node_count", 1)
        since = NIGHTS[1] if job_id == org.finished_job else NIGHTS[0]
        deleted = NIGHTS[1] if project["id"] == org.deleted_project else None
        expected = {
            "job_id": job_id,
            "job_name": job["name"],
            "project_id": project["id"],
            "project_name": project["name"],
            "team_name": project["team_name"],
            "job_status": job["current_status"],
            "job_status_since": since,
            "hours_in_status": pytest.approx((now - since) / HOUR, abs=0.05),
            "error_message": job["error_message"],
            "checkpoint_sync_status": job["checkpoint_sync_status"],
            "creator_email": (job["user"] or {}).get("email"),
            "instance_type_name": itype["name"],
            "gpu_type": itype["gpu_type"],
            "gpu_count": itype["gpu_count"],
            "node_count": nodes,
            "created_at": created,
            "updated_at": updated,
            "hours_since_update": pytest.approx((now - updated) / HOUR, abs=0.05),
            "checkpoint_count": len(cps),
            "live_checkpoint_count": len(live),
            "checkpoints_size_bytes": sum(c["size_bytes"] for c in cps),
            "checkpoints_size_gib": pytest.approx(sum(c["size_bytes"] for c in cps) / GIB),
            "live_size_bytes": sum(c["size_bytes"] for c in live),
            "live_size_gib": pytest.approx(sum(c["size_bytes"] for c in live) / GIB),
            "latest_checkpoint_id": latest and latest["checkpoint_id"],
            "latest_checkpoint_size_bytes": latest and latest["size_bytes"],
            "latest_checkpoint_size_gib": latest and pytest.approx(latest["size_bytes"] / GIB),
            "first_checkpoint_at": first,
            "last_checkpoint_at": last,
            "hours_to_first_checkpoint": first and pytest.approx((first - created) / HOUR, abs=1e-4),
            "wall_clock_hours": wall and pytest.approx(wall, abs=1e-4),
            "gpu_hours_estimate": None
            if wall is None
            else pytest.approx(itype["gpu_count"] * nodes * wall, abs=1e-3),
            "first_seen_at": NIGHTS[0],
            "last_seen_at": NIGHTS[0] if deleted else NIGHTS[1],
            "deleted_at": deleted,
            "project_deleted_at": deleted,
        }
        assert found[job_id] == expected, job_id
    # The organisation has jobs that exercise each rule.
    assert any(row["node_count"] == 2 for row in found.values())
    assert any(row["gpu_hours_estimate"] is None for row in found.values())


def test_project_storage_daily(org: Org, archive: Engine) -> None:
    today = datetime.now(UTC).date()
    checkpoints: dict[str, list[tuple[date, date | None, int]]] = {}
    for job_id, served in org.jobs.items():
        for c in served.checkpoints:
            gone = org.checkpoint_deleted_at(job_id, c["checkpoint_id"])
            checkpoints.setdefault(served.project["id"], []).append(
                (NIGHTS[0].date(), gone and gone.date(), c["size_bytes"])
            )
    expected = {}
    for project_id, items in checkpoints.items():
        day = NIGHTS[0].date()
        while day <= today:
            live = [size for seen, gone, size in items if seen <= day and not (gone and gone <= day)]
            expected[(project_id, day)] = (len(live), sum(live))
            day += timedelta(days=1)

    for timezone in (None, "Pacific/Kiritimati"):  # UTC+14: a UTC day must stay a UTC day
        found = {
            (row["project_id"], row["day"]): (row["live_checkpoint_count"], row["live_size_bytes"])
            for row in read(archive, project_storage_daily, timezone=timezone)
        }
        assert found == expected
    deleted = [
        (count, size) for (project, _), (count, size) in found.items() if project == org.deleted_project
    ]
    assert deleted[:2] != [(0, 0), (0, 0)] and deleted[2:] == [(0, 0)] * (len(deleted) - 2)


def test_a_checkpoint_deleted_the_day_it_was_first_seen_is_never_live(org: Org, archive: Engine) -> None:
    job_id, checkpoint_id = next(
        (j, c["checkpoint_id"])
        for j, s in org.jobs.items()
        for c in s.checkpoints
        if org.checkpoint_deleted_at(j, c["checkpoint_id"]) is None
    )
    project_id = org.jobs[job_id].project["id"]
    size = next(c["size_bytes"] for c in org.jobs[job_id].checkpoints if c["checkpoint_id"] == checkpoint_id)
    before = {
        r["day"]: r["live_size_bytes"]
        for r in read(archive, project_storage_daily)
        if r["project_id"] == project_id
    }
    late, gone = datetime(2026, 6, 10, 1, tzinfo=UTC), datetime(2026, 6, 10, 23, tzinfo=UTC)
    with archive.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE checkpoints SET first_seen_at = :late, deleted_at = :gone "
                "WHERE training_job_id = :job AND checkpoint_id = :checkpoint"
            ).bindparams(
                sa.bindparam("late", type_=checkpoint_facts.c.first_seen_at.type),
                sa.bindparam("gone", type_=checkpoint_facts.c.deleted_at.type),
            ),
            {"late": late, "gone": gone, "job": job_id, "checkpoint": checkpoint_id},
        )
    after = {
        r["day"]: r["live_size_bytes"]
        for r in read(archive, project_storage_daily)
        if r["project_id"] == project_id
    }
    assert after == {day: size_ - size for day, size_ in before.items()}


def test_downgrade_drops_the_views(archive: Engine) -> None:
    migrate.downgrade(archive, "0002")
    assert sa.inspect(archive).get_view_names() == []
    migrate.upgrade(archive)
    assert set(sa.inspect(archive).get_view_names()) == {view.name for view in VIEWS}
