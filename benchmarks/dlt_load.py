"""Load the fake Baseten API into a database with dlt's rest_api source; `compare_dlt.py` runs it.

`python benchmarks/dlt_load.py API_URL API_KEY DATABASE_URL PIPELINES_DIR` loads every training project,
every project's jobs and every job's checkpoints (one request each: the API has no pagination), merged on
their primary keys, into a SQLite file (dlt's sqlalchemy destination, with PRIMARY KEY constraints) or a
PostgreSQL database (dlt's postgres destination, which indexes primary keys by default). Run it twice with
the same PIPELINES_DIR for an unchanged reload. It needs the optional extra: `pip install -e '.[compare]'`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sqlalchemy.engine import make_url

PIPELINE = "baseten_dlt"
DATASET = "baseten"


def source(api_url: str, api_key: str) -> Any:
    """dlt's rest_api source over the three listing endpoints, parents resolving their children."""
    from dlt.sources.rest_api import rest_api_source

    return rest_api_source(
        {
            "client": {
                "base_url": api_url.rstrip("/") + "/v1/",
                "auth": {"type": "bearer", "token": api_key},
                "paginator": "single_page",
            },
            "resource_defaults": {"write_disposition": "merge"},
            "resources": [
                {
                    "name": "training_projects",
                    "primary_key": "id",
                    "endpoint": {"path": "training_projects", "data_selector": "training_projects"},
                },
                {
                    "name": "training_jobs",
                    "primary_key": "id",
                    "endpoint": {
                        "path": "training_projects/{resources.training_projects.id}/jobs",
                        "data_selector": "training_jobs",
                    },
                },
                {
                    "name": "checkpoints",
                    "primary_key": ["training_job_id", "checkpoint_id"],
                    "endpoint": {
                        "path": "training_projects/{resources.training_jobs.training_project_id}"
                        "/jobs/{resources.training_jobs.id}/checkpoints",
                        "data_selector": "checkpoints",
                    },
                },
            ],
        }
    )


def destination(database_url: str) -> Any:
    """dlt's sqlalchemy destination for a SQLite URL, its postgres destination otherwise."""
    import dlt

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        # Without PRIMARY KEY constraints (its default) the merge searches unindexed tables: an unchanged
        # reload of 46,238 checkpoints took 158-178 s on 2 cores.
        return dlt.destinations.sqlalchemy(database_url, create_primary_keys=True)
    # dlt's postgres credentials insist on a password; a server that trusts the client ignores this one.
    url = url.set(drivername="postgresql", password=url.password or "unused-under-trust-auth")
    return dlt.destinations.postgres(url.render_as_string(hide_password=False))


def main(argv: list[str]) -> None:
    """Run the pipeline once and print its load info."""
    api_url, api_key, database_url, pipelines_dir = argv
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no network here, and none wanted
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=PIPELINE,
        destination=destination(database_url),
        dataset_name=DATASET,
        pipelines_dir=pipelines_dir,
    )
    info = pipeline.run(source(api_url, api_key))
    print(info, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
