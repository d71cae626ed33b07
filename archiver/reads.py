"""What a sync records of each job's read in `training_jobs`: when it read the job's checkpoints,
and what the job said then (its `updated_at`, its status, whether every checkpoint was complete).

The next sync reads a job's checkpoints again only when these say it may have changed (`archiver.sync`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver.normalize import Row
from archiver.schema import training_jobs


def record(connection: Connection, states: Sequence[Row], now: datetime) -> None:
    """Record each job's read, at `now`: a state names the job (`job_id`) and what it said then
    (`job_updated_at`, `job_status`, `all_complete`). On PostgreSQL one `UPDATE` a job, pipelined
    (one round trip); on SQLite one statement per `FETCHES_PER_STATEMENT` jobs.

    Not one `UPDATE` a job on SQLite: its driver lets go of the GIL around each row's step, and the
    writer then waits for the fetch threads to hand it back (see `bulk.executemany`).
    """
    if not states:
        return
    if connection.dialect.name != "sqlite":
        connection.execute(_one_job_statement(), [{**state, "now": now} for state in states])
        return
    by_job = list({state["job_id"]: state for state in states}.values())  # a job read twice: its later read
    for start in range(0, len(by_job), FETCHES_PER_STATEMENT):
        batch = by_job[start : start + FETCHES_PER_STATEMENT]
        batch += [batch[-1]] * (FETCHES_PER_STATEMENT - len(batch))  # one shape: one compiled statement
        params: dict[str, Any] = {"now": now}
        for index, state in enumerate(batch):
            for name in ("job_id", *_FETCH_COLUMNS):
                params[f"{name}_{index}"] = state[name]
        connection.execute(_jobs_statement(), params)


FETCHES_PER_STATEMENT = 100
# A fetch state's values, and the columns of `training_jobs` that record them.
_FETCH_COLUMNS = {
    "job_updated_at": "checkpoints_fetched_job_updated_at",
    "job_status": "checkpoints_fetched_job_status",
    "all_complete": "checkpoints_all_complete",
}


@functools.cache
def _one_job_statement() -> sa.Update:
    """`UPDATE training_jobs SET ... WHERE id = :job_id`: one job's read."""
    return (
        sa.update(training_jobs)
        .where(training_jobs.c.id == sa.bindparam("job_id"))
        .values(
            checkpoints_fetched_at=sa.bindparam("now", type_=training_jobs.c.checkpoints_fetched_at.type),
            **{
                column: sa.bindparam(name, type_=training_jobs.c[column].type)
                for name, column in _FETCH_COLUMNS.items()
            },
        )
    )


@functools.cache
def _jobs_statement() -> sa.Update:
    """`UPDATE training_jobs SET <column> = CASE id WHEN :job_id_0 THEN :<value>_0 ... END, ...`."""
    jobs = training_jobs.c
    indexes = range(FETCHES_PER_STATEMENT)

    def per_job(name: str, column: sa.Column[Any]) -> sa.Case[Any]:
        whens = [
            (sa.bindparam(f"job_id_{i}", type_=jobs.id.type), sa.bindparam(f"{name}_{i}", type_=column.type))
            for i in indexes
        ]
        return sa.case(*((jobs.id == job, value) for job, value in whens))

    return (
        sa.update(training_jobs)
        .where(jobs.id.in_([sa.bindparam(f"job_id_{i}", type_=jobs.id.type) for i in indexes]))
        .values(
            checkpoints_fetched_at=sa.bindparam("now", type_=jobs.checkpoints_fetched_at.type),
            **{column: per_job(name, jobs[column]) for name, column in _FETCH_COLUMNS.items()},
        )
    )
