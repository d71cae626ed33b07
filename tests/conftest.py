"""Fixtures: every database test runs on a SQLite file and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from archiver import db, migrate

from .support.databases import KINDS, databases

PROXY_VARIABLES = [f"{name}_proxy" for name in ("http", "https", "all", "no")]


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake API is on loopback: a proxy set on the machine running the tests is not asked for it
    (the `archiver` commands they run inherit this environment). Tests of proxies set their own."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(params=KINDS)
def database_kind(request: pytest.FixtureRequest) -> str:
    """Which database a test runs on: "sqlite" or "postgresql"."""
    return str(request.param)


@pytest.fixture
def new_database(database_kind: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Make empty databases of the kind under test (for clean twins); PostgreSQL ones are dropped after."""
    with databases(database_kind, tmp_path) as make:
        yield make


@pytest.fixture
def database_url(new_database: Callable[[], str]) -> str:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    return new_database()


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database, for what only PostgreSQL has (passwords, advisory locks)."""
    with databases("postgresql", tmp_path) as make:
        yield make()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the empty test database."""
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def archive(engine: Engine) -> Engine:
    """An engine on a database upgraded to the newest schema."""
    migrate.upgrade(engine)
    return engine


# tests/test_migrations.py still reads this helper from here; it lives in tests/support now.
from .support.databases import scalar as scalar  # noqa: E402
