"""`archiver demo`: the real sync path against the built-in fake API, into a SQLite file."""

from __future__ import annotations

from typing import Any

from archiver import db, query
from archiver.client import BasetenClient
from archiver.fake_api import DEFAULT_API_KEY, FakeBaseten, OrgSpec, serve
from archiver.sync import SyncOptions, SyncReport, run_sync

# Live storage by project, read from a view like every query in README.md's quick start.
SAMPLE_QUERY = """
SELECT project_id, project_name, COUNT(*) AS checkpoints, SUM(size_bytes) AS size_bytes
FROM checkpoint_facts
WHERE deleted_at IS NULL
GROUP BY project_id, project_name
ORDER BY size_bytes DESC
"""


def run_demo(database_url: str, seed: int = 0) -> tuple[SyncReport, list[str], list[tuple[Any, ...]]]:
    """Serve a fake organisation on loopback, sync it, and return the report and a sample query."""
    engine = db.make_engine(database_url)
    db.check_connection(engine)
    fake = FakeBaseten(OrgSpec(seed=seed))
    with serve(fake) as url, BasetenClient(DEFAULT_API_KEY, url) as client:
        report = run_sync(engine, client, SyncOptions(migrate=True))
    with query.results(engine, SAMPLE_QUERY) as result:
        columns, rows = result.columns, list(result.rows)
    engine.dispose()
    return report, columns, rows
