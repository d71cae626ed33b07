"""On PostgreSQL, what autovacuum would do for the archive, where it does not or not yet: gather the
planner's statistics of the tables the facts views read (`analyze`), and vacuum the tables the nights
churn (`vacuum`).

Every night writes a new version of each job's row (`training_jobs.last_seen_at`) and of each
`job_facts` row (its hours brought to now). Autovacuum reclaims the versions left behind; where
it is off, for the server or for a table, nothing does, and each night reads past those of every
night before. On the benchmark's organisation (2,000 jobs), 87 runs left 156,837 dead rows in
`job_facts` (64 MB for 2,000 live ones), and an unchanged night took 1.86 s before a `VACUUM`
and 1.63 s after.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from archiver.db import database_errors, describe_db_error
from archiver.schema import VERSIONED, checkpoints, lora_adapter_configs, metadata
from archiver.views import FACTS

log = logging.getLogger("archiver.upkeep")

# The tables the `_live` views read, on PostgreSQL analyzed before a refresh (`analyze`): the small ones
# (a row per job, project, type or config: every night updates every job's row) each time...
SMALL = (
    *(name for v in VERSIONED if v.table is not checkpoints for name in (v.table.name, v.history.name)),
    lora_adapter_configs.name,
)
# ...the large ones (a row per checkpoint) when they have no statistics, or most of their rows changed since.
# Whole: an `ANALYZE` of some columns leaves the server's count of changes since the last one as it was.
# (`checkpoint_facts` of 92,520 rows: 0.26 s by `job_id` alone, 0.40 s whole. Analyzed by `job_id` after a
# first load, as it was from 1b84321 to 2dc600b, the first night then analyzed it whole: 0.40 s more.)
LARGE = ("checkpoints", "checkpoint_history", "checkpoint_facts")
MIN_CHANGED_ROWS = 1_000  # and a tenth of the table, by the server's counters
# A sync's share of the jobs it reads written before it analyzes the large tables ahead of its end
# (`AnalysisAhead`). On a first load, what it writes after, with what the server has yet to count
# (a backend reports its changes at most once a second), must stay under a tenth of them.
AHEAD_SHARE = 0.95


def analyze(connection: Connection, *, small: bool = True, leave: Collection[str] = ()) -> list[str]:
    """On PostgreSQL, gather the planner's statistics of the tables the views read, as autovacuum would
    (where it runs, and in its own time), so their plans fit the tables as they are; return the names
    of those it analyzed.

    Planned without them, rewriting `gpu_hours_daily` of 92,520 checkpoints took 0.65 s at every sync,
    and 0.08 s with them. The job table gets a new version of every row each night (its `last_seen_at`),
    and plans flipped as it grew; the small tables take milliseconds, so they are analyzed each time.
    A large table is left unless it has no statistics or more than a tenth of its rows changed since
    (autovacuum's default share), by the server's counters, or it is one to `leave` (analyzed ahead of
    the run's end). Without `small`, only the large ones.
    """
    if connection.dialect.name != "postgresql":
        return []
    query = sa.text(
        "SELECT relname, quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables "
        "WHERE schemaname = ANY (current_schemas(false)) AND (relname IN :small OR relname IN :large AND ("
        "(last_analyze IS NULL AND last_autoanalyze IS NULL) "
        "OR (n_mod_since_analyze > :changed AND n_mod_since_analyze > n_live_tup / 10)))"
    ).bindparams(*(sa.bindparam(name, expanding=True, type_=sa.String()) for name in ("small", "large")))
    names = {
        "small": list(SMALL) if small else [],
        "large": [name for name in LARGE if name not in leave],
        "changed": MIN_CHANGED_ROWS,
    }
    found = sorted(
        ((str(name), str(qualified)) for name, qualified in connection.execute(query, names)),
        key=lambda row: row[1],
    )
    if found:
        tables = ", ".join(qualified for _, qualified in found)
        connection.exec_driver_sql(f"ANALYZE {tables}")
        log.debug("gathered statistics of %s for the facts views' plans", tables)
    return [name for name, _ in found]


def count_now(connection: Connection) -> None:
    """On PostgreSQL 15 or later, have the server count this transaction's changes as it commits.

    A backend reports its changes to the server's counters at most once a second: those of a first
    load's last second before its `ANALYZE` ahead (`AnalysisAhead`) were counted after it, as if made
    since, and one load in three to six then left `checkpoints` over the tenth that has the next night
    analyze it again (0.3-0.9 s). The writer asks for each batch's to be counted as it commits.
    """
    version = connection.dialect.server_version_info
    if connection.dialect.name == "postgresql" and version is not None and version >= (15,):
        connection.exec_driver_sql("SELECT pg_stat_force_next_flush()")


class AnalysisAhead:
    """The large tables' `ANALYZE` (see `analyze`), run ahead of a sync's end, while it writes its last jobs.

    On PostgreSQL, on a connection of its own, in a thread that waits on the server: a sync that
    wrote most of the archive (a first load) otherwise gathered their statistics after its last
    write, before rewriting the facts tables (0.66 s of a paced first load of 92,520 checkpoints,
    `checkpoint_facts` alone 0.39 s). Started once what the sync has left to write is a small share
    of what it wrote (`AHEAD_SHARE`); the refresh at its end leaves the tables it analyzed as they are
    (`fresh`), unless the run changed more than a tenth as many rows again after. Nothing on SQLite.
    A failure is the refresh's to meet: it analyzes what still needs it.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._thread: threading.Thread | None = None
        self._changed = 0  # the rows the run had changed when it started
        self._analyzed: list[str] = []

    def start(self, changed: int) -> None:
        """Analyze in the background, once a run, the run having changed `changed` rows; on SQLite, nothing."""
        if self._thread is not None or self._engine.dialect.name != "postgresql":
            return
        self._changed = changed
        self._thread = threading.Thread(target=self._analyze, name="analyze-ahead", daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the analysis to end."""
        if self._thread is not None:
            self._thread.join()

    def fresh(self, changed: int) -> frozenset[str]:
        """The tables it analyzed, unless the run changed more than a tenth as many rows again since
        (`changed` rows in all): their statistics are as good as the refresh's would be."""
        self.join()
        if changed - self._changed > self._changed // 10:
            return frozenset()
        return frozenset(self._analyzed)

    def _analyze(self) -> None:
        try:
            with self._engine.connect() as connection:
                analyzed = analyze(connection, small=False)
                connection.commit()
            self._analyzed = analyzed
        except database_errors(self._engine) as exc:
            log.debug(
                "could not analyze ahead of the run's end (its refresh will): %s", describe_db_error(exc)
            )


# A table is vacuumed once its dead rows are more than a fifth of its live ones (autovacuum's default
# share) and more than this many (not its 50: this is part of a run's time), by the server's counters.
MIN_DEAD_ROWS = 1_000

_CHURNED = sa.text(
    "SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.relname) "
    "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.schemaname = ANY (current_schemas(false)) AND s.relname IN :tables "
    "AND s.n_dead_tup > :min_dead AND s.n_dead_tup > s.n_live_tup / 5 "
    "AND (current_setting('autovacuum') = 'off' "
    "OR coalesce(c.reloptions, '{}') && ARRAY['autovacuum_enabled=false', 'autovacuum_enabled=off']) "
    "ORDER BY 1"
).bindparams(sa.bindparam("tables", expanding=True))


def vacuum(engine: Engine) -> list[str]:
    """VACUUM the archive's tables that autovacuum leaves alone, once they hold as many dead rows as it
    would wait for (`MIN_DEAD_ROWS`); return their names. Nothing on SQLite (its deletes and updates
    reuse their pages). A refusal (a role that does not own the tables) is logged, not raised.
    """
    if engine.dialect.name != "postgresql":
        return []
    try:
        # VACUUM runs outside a transaction.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            archive = sorted({t.name for t in metadata.tables.values()} | {t.name for t in FACTS})
            names = {"tables": archive, "min_dead": MIN_DEAD_ROWS}
            tables = list(connection.execute(_CHURNED, names).scalars())
            if tables:
                connection.exec_driver_sql(f"VACUUM {', '.join(tables)}")
                log.info("vacuumed %s: autovacuum does not run there", ", ".join(tables))
    except database_errors(engine) as exc:
        log.warning("could not vacuum the archive's tables: %s", describe_db_error(exc))
        return []
    return tables
