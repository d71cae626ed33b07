"""`archiver demo`: the real sync path against the built-in fake API, into a SQLite file."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from archiver import db, migrate
from archiver.client import BasetenClient
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, OrgSpec, serve
from archiver.sync import SyncReport, run_sync

SAMPLE_QUERY = """
SELECT p.name AS project, COUNT(c.id) AS checkpoints, SUM(c.size_bytes) AS size_bytes
FROM training_projects p
JOIN training_jobs j ON j.training_project_id = p.id
JOIN checkpoints c ON c.training_job_id = j.id
GROUP BY p.id, p.name
ORDER BY size_bytes DESC
"""


def run_demo(database_url: str, seed: int = 0) -> tuple[SyncReport, list[str], list[tuple[Any, ...]]]:
    """Serve a fake organisation on loopback, sync it, and return the report and a sample query."""
    engine = db.make_engine(database_url)
    db.check_connection(engine)
    migrate.ensure_current(engine, migrate=True)
    fake = FakeBaseten(OrgSpec(seed=seed))
    with serve(fake) as url, BasetenClient(DEFAULT_API_KEY, url) as client:
        report = run_sync(engine, client)
    with engine.connect() as connection:
        result = connection.execute(sa.text(SAMPLE_QUERY))
        columns = list(result.keys())
        rows = [tuple(row) for row in result]
    engine.dispose()
    return report, columns, rows
