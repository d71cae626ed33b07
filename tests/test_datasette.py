"""A SQLite archive opened in Datasette, as an analyst would: descriptions, facets, sorting, a time filter.

Datasette reads SQLite only, so this runs on SQLite; the PostgreSQL side of the same questions is
`tests/test_bi_literals.py`. Datasette is a test dependency, never the archiver's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from datasette.app import Datasette  # type: ignore[import-untyped]

from archiver import db

from .support.commands import run_archiver
from .support.databases import rows, scalar
from .support.orgs import archive_org

DATABASE = "team-archive"


def browse(path: Path, metadata: dict[str, Any], *urls: str) -> list[tuple[int, Any]]:
    """GET each of `urls` from a Datasette serving `path` with `metadata`: (status, JSON or text)."""

    async def get_all() -> list[tuple[int, Any]]:
        datasette = Datasette([str(path)], metadata=metadata)
        await datasette.invoke_startup()
        answers = []
        for url in urls:
            response = await datasette.client.get(url)
            body = response.json() if ".json" in url else response.text
            answers.append((response.status_code, body))
        return answers

    return asyncio.run(get_all())


def test_datasette_shows_descriptions_and_answers_facets_sorts_and_time_filters(tmp_path: Path) -> None:
    path = tmp_path / f"{DATABASE}.db"
    url = f"sqlite:///{path}"
    engine = db.make_engine(url)
    archive_org(engine)
    result = run_archiver("docs", "--datasette", env={"ARCHIVER_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    metadata = json.loads(result.stdout)
    # A day with checkpoints created before and after it: the median checkpoint's.
    median = rows(engine, "SELECT created_at FROM checkpoint_facts ORDER BY created_at")
    since = str(median[len(median) // 2][0])[:10]
    base = f"/{DATABASE}"
    listing, facets, sorted_jobs, recent, page = browse(
        path,
        metadata,
        f"{base}.json",
        f"{base}/job_facts.json?_facet=job_status&_facet=instance_type_name&_size=0",
        f"{base}/job_facts.json?_sort_desc=checkpoints_size_bytes&_size=5&_shape=objects",
        f"{base}/checkpoint_facts.json?created_at__gte={since}&_size=0",
        f"{base}/job_facts",
    )
    assert all(status == 200 for status, _ in (listing, facets, sorted_jobs, recent, page))

    # The table list: what an analyst charts, not the bookkeeping.
    tables = {t["name"]: t for t in listing[1]["tables"]}
    assert not tables["job_facts"]["hidden"] and tables["api_response_bodies"]["hidden"]

    # Facets finish within Datasette's own time limit and count what SQL counts.
    body = facets[1]
    # A facet that timed out is absent (as `job_status` is on `job_facts_live` at 189k checkpoints: measured).
    assert set(body["facet_results"]) == {"job_status", "instance_type_name"}
    by_status = {r["value"]: r["count"] for r in body["facet_results"]["job_status"]["results"]}
    counted = rows(engine, "SELECT job_status, COUNT(*) FROM job_facts GROUP BY job_status")
    assert by_status == {status: count for status, count in counted}

    # Sorting by an exact byte sum: the largest jobs first.
    sizes = [r["checkpoints_size_bytes"] for r in sorted_jobs[1]["rows"]]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 5
    assert sizes[0] == scalar(engine, "SELECT MAX(checkpoints_size_bytes) FROM job_facts")

    # A time filter the way Datasette writes it: a date literal against stored UTC timestamps.
    expected = scalar(engine, "SELECT COUNT(*) FROM checkpoint_facts WHERE created_at >= :since", since=since)
    assert 0 < expected < scalar(engine, "SELECT COUNT(*) FROM checkpoint_facts")  # type: ignore[operator]
    assert recent[1]["filtered_table_rows_count"] == expected

    # The descriptions reach the page.
    about = metadata["databases"][DATABASE]["tables"]["job_facts"]
    assert about["description"].split(".")[0] in page[1]
    engine.dispose()
