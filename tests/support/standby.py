"""A throwaway PostgreSQL primary and its hot standby, made with the server's own tools.

The shared test server has no replication access, so a case about a hot standby builds a pair of
its own in a temporary directory: `initdb`, `pg_basebackup -R`, two `pg_ctl start`s on free
loopback ports (about a second). Without the server's binaries it skips, and fails in CI, where
every PostgreSQL case must run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from .databases import IN_CI
from .waiting import wait_for


@dataclass(frozen=True)
class Pair:
    primary_url: str
    standby_url: str

    def caught_up(self) -> None:
        """Wait until the standby has replayed everything the primary has written."""
        primary, standby = sa.create_engine(self.primary_url), sa.create_engine(self.standby_url)
        try:
            with primary.connect() as connection:
                written = connection.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar()

            def replayed() -> bool:
                with standby.connect() as connection:
                    return bool(
                        connection.exec_driver_sql(
                            "SELECT pg_last_wal_replay_lsn() >= %(lsn)s::pg_lsn", {"lsn": written}
                        ).scalar()
                    )

            wait_for(replayed, "the standby to replay the primary's writes")
        finally:
            primary.dispose()
            standby.dispose()


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = Path(found[-1]) if found else (Path(w) if (w := shutil.which("initdb")) else None)
    if initdb is None:
        if IN_CI:
            pytest.fail("initdb is not installed: the hot-standby case must run in CI")
        pytest.skip("needs PostgreSQL's server binaries (initdb, pg_basebackup, pg_ctl)")
    return initdb.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def hot_standby() -> Iterator[Pair]:
    """A primary and a hot standby streaming from it, both stopped and removed afterwards."""
    bindir = _binaries()
    # The server refuses to run as root: then run it as the postgres user, in a directory it owns
    # (not under pytest's, which only root may enter).
    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="archiver-standby-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(home, pwd.getpwnam("postgres").pw_uid, -1)

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{command[0]} failed: {done.stderr or done.stdout}"

    primary, standby = home / "primary", home / "standby"
    ports = {primary: _free_port(), standby: _free_port()}
    started: list[Path] = []

    def start(data: Path) -> None:
        options = f"-p {ports[data]} -k {home} -c listen_addresses=127.0.0.1"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", f"{data}.log", "-w", "start")
        started.append(data)

    try:
        run(str(bindir / "initdb"), "-D", str(primary), "-A", "trust", "-U", "postgres")
        with (primary / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        start(primary)
        run(
            str(bindir / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(ports[primary]), "-U", "postgres", "-D", str(standby), "-R"),
        )
        start(standby)
        yield Pair(
            f"postgresql+psycopg://postgres@127.0.0.1:{ports[primary]}/postgres",
            f"postgresql+psycopg://postgres@127.0.0.1:{ports[standby]}/postgres",
        )
    finally:
        for data in reversed(started):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)
