"""`archiver demo`: an organisation with what the README's examples ask for, dated from now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import demo
from archiver.views import checkpoint_facts, job_facts

from .support.databases import scalar


def test_the_demo_holds_what_the_readme_examples_ask_for(database_url: str, engine: Engine) -> None:
    """On the demo archive `report jobs --status FAILED --since 7d` printed no rows, `report
    checkpoints --job p7qr9qv` failed, and the quick start's five largest checkpoints had no
    base model or LoRA rank."""
    started = datetime.now(UTC)
    report, _, storage = demo.run_demo(database_url)
    assert report.exit_code == 0
    assert scalar(engine, "SELECT COUNT(*) FROM checkpoints") == demo.organisation().total_checkpoints()
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
