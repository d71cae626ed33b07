"""Fixtures: every database test runs on a SQLite file and on a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import db, migrate

POSTGRES_URL = os.environ.get("ARCHIVER_TEST_POSTGRES_URL")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh PostgreSQL database for one test and drop it afterwards."""
    if not POSTGRES_URL:
        if IN_CI:
            pytest.fail("ARCHIVER_TEST_POSTGRES_URL is not set in CI: PostgreSQL cases must run")
        pytest.skip("set ARCHIVER_TEST_POSTGRES_URL to run the PostgreSQL cases")
    admin = db.make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    name = f"archiver_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield db.parse_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'archive.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, for what only PostgreSQL has (passwords, advisory locks)."""
    with postgres_database() as url:
        yield url


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


def rows(engine: Engine, sql: str, **params: object) -> list[tuple[object, ...]]:
    """Run a query and return its rows as tuples."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql), params)]


def scalar(engine: Engine, sql: str, **params: object) -> object:
    """Run a query and return its single value."""
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar_one()


@dataclass
class Result:
    """What a run of the `archiver` command printed and returned."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def archiver_command() -> list[str]:
    """The installed `archiver` console script, or `python -m archiver` beside this interpreter."""
    script = Path(sys.executable).parent / "archiver"
    if script.exists():
        return [str(script)]
    found = shutil.which("archiver")
    return [found] if found else [sys.executable, "-m", "archiver"]


def run_archiver(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> Result:
    """Run the real `archiver` command in a subprocess."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"BASETEN_API_KEY", "BASETEN_API_URL", "ARCHIVER_DATABASE_URL"}
    }
    full_env.update(env or {})
    completed = subprocess.run(
        [*archiver_command(), *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def new_database(database_url: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Make further empty databases of the same kind as `database_url` (for clean twins)."""
    made: list[str] = []

    def make() -> str:
        name = f"archiver_test_{uuid.uuid4().hex[:12]}"
        if database_url.startswith("sqlite"):
            return f"sqlite:///{tmp_path / (name + '.db')}"
        assert POSTGRES_URL
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return db.parse_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    admin = db.make_engine(POSTGRES_URL or "sqlite://").execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield make
    finally:
        with admin.connect() as connection:
            for name in made:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
