"""Time the queries a BI tool sends to an archive, and the rewrite of its facts tables, on SQLite or PostgreSQL.

    .venv/bin/python benchmarks/bi_queries.py DATABASE_URL [--refresh]

Each query runs three times and its best time is printed; the facts tables answer them, where the
`_live` views they are rewritten from would recompute every checkpoint's facts. With `--refresh`, each
facts table is then rewritten from its view, as a sync does at its end, and the seconds are printed.
An archive to try it on: serve `archiver fake-api --projects 100 --jobs 100 --checkpoints 100` (about
950,000 checkpoints) and `archiver sync --migrate --max-rps 100000` into the database first.
"""

from __future__ import annotations

import argparse
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
    engine.dispose()


def _timed(connection: sa.Connection, sql: str) -> float:
    started = time.perf_counter()
    connection.exec_driver_sql(sql).fetchall()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
