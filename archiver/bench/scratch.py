"""Scratch databases: empty ones made on demand, the PostgreSQL ones dropped afterwards.

The benchmark and the test suite both make their databases here.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from archiver import db


@contextlib.contextmanager
def scratch_databases(
    postgres_url: str | None, workdir: Path, prefix: str = "archiver_scratch_"
) -> Iterator[Callable[[str], str]]:
    """Yield a factory of empty databases by kind ("sqlite" files in `workdir`, or "postgresql"
    databases on the server `postgres_url` names); drop the PostgreSQL ones on exit."""
    created: list[str] = []
    admin = None
    if postgres_url:
        admin = db.make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")

    def new(kind: str) -> str:
        name = f"{prefix}{uuid.uuid4().hex[:12]}"
        if kind == "sqlite":
            return f"sqlite:///{workdir / name}.db"
        if admin is None or postgres_url is None:
            raise ValueError("a PostgreSQL scratch database needs a server URL")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return db.parse_url(postgres_url).set(database=name).render_as_string(hide_password=False)

    try:
        yield new
    finally:
        if admin is not None:
            with admin.connect() as connection:
                for name in created:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
