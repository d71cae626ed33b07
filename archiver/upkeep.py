"""On PostgreSQL where autovacuum does not run, vacuum the archive's tables that the nights churn.

Every night writes a new version of each job's row (`training_jobs.last_seen_at`) and of each
`job_facts` row (its hours brought to now). Autovacuum reclaims the versions left behind; where
it is off, for the server or for a table, nothing does, and each night reads past those of every
night before. On the benchmark's organisation (2,000 jobs), 87 runs left 156,837 dead rows in
`job_facts` (64 MB for 2,000 live ones), and an unchanged night took 1.86 s before a `VACUUM`
and 1.63 s after.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.db import database_errors, describe_db_error
from archiver.schema import metadata
from archiver.views import FACTS

log = logging.getLogger("archiver.upkeep")

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
