"""Scratch databases for the tests, and quick reads of an archive."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.bench.scratch import scratch_databases

POSTGRES_URL = os.environ.get("ARCHIVER_TEST_POSTGRES_URL")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
KINDS = ("sqlite", "postgresql")


def require_postgres() -> str:
    """The PostgreSQL server to test on; without one, skip, or fail in CI, where every case must run."""
    if not POSTGRES_URL:
        if IN_CI:
            pytest.fail("ARCHIVER_TEST_POSTGRES_URL is not set in CI: PostgreSQL cases must run")
        pytest.skip("set ARCHIVER_TEST_POSTGRES_URL to run the PostgreSQL cases")
    return POSTGRES_URL


@contextmanager
def databases(kind: str, workdir: Path) -> Iterator[Callable[[], str]]:
    """Yield a maker of fresh empty databases of one kind; the PostgreSQL ones are dropped on exit."""
    server = require_postgres() if kind == "postgresql" else None
    with scratch_databases(server, workdir, prefix="archiver_test_") as new:
        yield lambda: new(kind)


def rows(engine: Engine, sql: str, **params: object) -> list[tuple[object, ...]]:
    """Run a query and return its rows as tuples."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql), params)]


def scalar(engine: Engine, sql: str, **params: object) -> object:
    """Run a query and return its single value."""
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar_one()
