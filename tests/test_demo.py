"""`archiver demo`: an organisation with what the README's examples ask for, dated from now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import demo
from archiver.fake_api import play_until
from archiver.views import checkpoint_facts, job_facts

from .support.databases import scalar


def test_the_demo_holds_what_the_readme_examples_ask_for(database_url: str, engine: Engine) -> None:
    """On the demo archive `report jobs --status FAILED --since 7d` printed no rows, `report
    checkpoints --job p7qr9qv` failed, and the quick start's five largest checkpoints had no
    base model or LoRA rank."""
    started = datetime.now(UTC)
    ran = demo.run_demo(database_url)
    assert ran.exit_code == 0
    after = demo.organisation()
    play_until(after, 2)
    assert (
        scalar(engine, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NULL")
        == after.total_checkpoints()
    )
    storage = ran.as_of[1]
    assert [row[0] for row in storage][:1] == ["n4q95w5"]
    with engine.connect() as connection:
        job = connection.execute(
            sa.select(job_facts.c.project_id, job_facts.c.job_status).where(job_facts.c.job_id == "p7qr9qv")
        ).one()
        failed_lately = connection.scalars(
            sa.select(job_facts.c.updated_at).where(
                job_facts.c.job_status == "TRAINING_JOB_FAILED",
                job_facts.c.updated_at >= started - timedelta(days=7),
            )
        ).all()
        largest = connection.execute(
            sa.select(checkpoint_facts.c.base_model, checkpoint_facts.c.lora_r)
            .order_by(checkpoint_facts.c.size_bytes.desc())
            .limit(5)
        ).all()
    assert tuple(job) == ("n4q95w5", "TRAINING_JOB_FAILED")
    assert len(failed_lately) >= 2 and max(failed_lately) <= started
    assert sum(base_model is not None and r is not None for base_model, r in largest) >= 3


def test_the_demo_shows_three_nights_and_what_the_archive_remembers(database_url: str) -> None:
    """The demo synced one night only, so it could not show history: now the archive answers as
    of the first night (the deleted project there, the renamed one under its old name) and says
    its live storage after each night, which is what the API served that night."""
    ran = demo.run_demo(database_url)
    assert [night.number for night in ran.nights] == [0, 1, 2]
    assert all(night.report.exit_code == 0 for night in ran.nights)
    renamed, deleted = ran.nights[1].changes, ran.nights[2].changes
    assert renamed is not None and renamed.renamed is not None
    assert deleted is not None and deleted.deleted is not None
    before = demo.organisation()
    assert {(row[0], row[1]) for row in ran.as_of[1]} == {
        (p, before.project(p)["name"]) for p in before.project_ids()
    }
    assert (renamed.renamed[0], renamed.renamed[1]) in {(row[0], row[1]) for row in ran.as_of[1]}
    assert deleted.deleted[0] in {row[0] for row in ran.as_of[1]}
    assert ran.over_time[0][:4] == ["night", "as_of", "checkpoints", "size_bytes"]
    expected = []
    for night in range(3):
        fake = demo.organisation()
        play_until(fake, night)
        expected.append((night, fake.total_checkpoints()))
    assert [(row[0], row[2]) for row in ran.over_time[1]] == expected
    assert [row[1] for row in ran.over_time[1]] == [night.finished_at for night in ran.nights]
