"""Time the queries a BI tool sends to an archive, and the rewrite of its facts tables, on SQLite or PostgreSQL.

    .venv/bin/python benchmarks/bi_queries.py DATABASE_URL [--refresh] [--datasette]

Each query runs three times and its best time is printed; the facts tables answer them, where the
`_live` views they are rewritten from would recompute every checkpoint's facts. With `--refresh`, each
facts table is then rewritten from its view, as a sync does at its end, and the seconds are printed.
With `--datasette` (a SQLite archive; Datasette comes with the `test` extra), the archive is opened in
Datasette with its default limits (200 ms per facet, 1 s per query) and the metadata `archiver docs
--datasette` writes, and each facts table's facets and a sort of `job_facts` are requested as a
browser would: each line says how long the page took and whether every facet and the rows came back.
An archive to try it on: serve `archiver fake-api --projects 100 --jobs 100 --checkpoints 100` (about
950,000 checkpoints) and `archiver sync --migrate --max-rps 100000` into the database first.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import sqlalchemy as sa

from archiver import db, facts
from archiver.views import FACTS


def queries(dialect: str) -> dict[str, str]:
    """The typical BI queries: group-bys, a top-N sort, a date window, facets, a filter."""
    month_ago = "CURRENT_DATE - 30" if dialect == "postgresql" else "date('now', '-30 days')"
    return {
        "job_facts: bytes per team": "SELECT team_name, COUNT(*), SUM(checkpoints_size_bytes) FROM job_facts GROUP BY team_name",
        "job_facts: top 50 by size": "SELECT * FROM job_facts ORDER BY checkpoints_size_bytes DESC LIMIT 50",
        "job_facts: facet job_status": "SELECT job_status, COUNT(*) FROM job_facts GROUP BY job_status",
        "project_storage_daily: last 30 days": f"SELECT day, SUM(live_size_bytes) FROM project_storage_daily WHERE day >= {month_ago} GROUP BY day",  # noqa: S608
        "gpu_hours_daily: per instance type": "SELECT instance_type_name, SUM(gpu_hours) FROM gpu_hours_daily GROUP BY instance_type_name",
        "checkpoint_facts: facet checkpoint_type": "SELECT checkpoint_type, COUNT(*) FROM checkpoint_facts GROUP BY checkpoint_type",
        "checkpoint_facts: top 20 projects": "SELECT project_label, COUNT(*) FROM checkpoint_facts GROUP BY project_label ORDER BY 2 DESC LIMIT 20",
        "checkpoint_facts: one job": "SELECT COUNT(*) FROM checkpoint_facts WHERE job_id = (SELECT MIN(id) FROM training_jobs)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("database_url")
    parser.add_argument("--refresh", action="store_true", help="also time the rewrite of each facts table")
    parser.add_argument("--datasette", action="store_true", help="also time facets and a sort in Datasette")
    args = parser.parse_args()
    engine = db.make_engine(args.database_url)
    with engine.connect() as connection:
        (checkpoints,) = connection.execute(sa.text("SELECT COUNT(*) FROM checkpoints")).one()
        print(f"{engine.dialect.name}, {checkpoints:,} checkpoints; best of 3 runs")
        for name, sql in queries(engine.dialect.name).items():
            best = min(_timed(connection, sql) for _ in range(3))
            print(f"  {name:42s} {best * 1000:9.1f} ms")
    if args.refresh:
        for table in FACTS:  # in the order a sync rewrites them
            started = time.perf_counter()
            with engine.begin() as connection:
                facts.rewrite(connection, table)
            print(f"  rewrite {table.name:34s} {time.perf_counter() - started:9.1f} s")
    if args.datasette:
        engine.dispose()
        asyncio.run(_browse(engine.url))
    engine.dispose()


# Pages an analyst opens in Datasette: every facts table with facets on what it is charted by. Datasette
# also tries every other column as a suggested facet (50 ms each, at most): the last page shows that cost;
# the others leave it out (`_nosuggest`), as `--setting suggest_facets off` does for a whole instance.
PAGES = {
    "checkpoint_facts": "?_facet=checkpoint_type&_facet=job_status&_facet=project_label&_nosuggest=1",
    "job_facts": "?_facet=job_status&_facet=instance_type_name&_facet=team_name&_nosuggest=1",
    "job_facts sorted": "?_sort_desc=checkpoints_size_bytes&_nosuggest=1",
    "project_storage_daily": "?_facet=project_label&_facet=team_name&_facet=day&_nosuggest=1",
    "gpu_hours_daily": "?_facet=gpu_type&_facet=instance_type_name&_facet=team_name&_nosuggest=1",
    "checkpoint_lora_modules": "?_facet=module&_nosuggest=1",
    "checkpoint_facts suggested": "?_facet=checkpoint_type",
}


async def _browse(url: sa.URL) -> None:
    from datasette.app import Datasette  # type: ignore[import-untyped]

    from archiver.docs import datasette_metadata

    path = db.sqlite_path(url)
    if path is None:
        raise SystemExit("--datasette needs a SQLite archive")
    datasette = Datasette([str(path)], metadata=datasette_metadata(url.render_as_string(hide_password=False)))
    await datasette.invoke_startup()
    print(f"Datasette {datasette_version()}, default limits; best of 3 loads")
    for name, query in PAGES.items():
        table = name.split()[0]
        page = f"/{path.stem}/{table}.json{query}&_size=50"
        best, answer = float("inf"), {}
        for _ in range(3):
            started = time.perf_counter()
            response = await datasette.client.get(page)
            best = min(best, time.perf_counter() - started)
            answer = response.json() if response.status_code == 200 else {"error": response.status_code}
        asked = [part.split("=")[1] for part in query.lstrip("?").split("&") if part.startswith("_facet=")]
        results = answer.get("facet_results", {})
        missing = sorted(set(asked) - set(results.get("results", results)))  # Datasette 1.0 nests them
        timed_out = sorted({*answer.get("facets_timed_out", []), *missing})
        state = (
            f"error {answer['error']}"
            if "error" in answer
            else f"timed out: {timed_out}"
            if timed_out
            else "ok"
        )
        print(f"  {name:26s} {best * 1000:8.1f} ms  {len(answer.get('rows', [])):3d} rows  {state}")


def datasette_version() -> str:
    from importlib.metadata import version

    return version("datasette")


def _timed(connection: sa.Connection, sql: str) -> float:
    started = time.perf_counter()
    connection.exec_driver_sql(sql).fetchall()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
