"""Facts tables: the BI relations become typed, indexed tables, refreshed at the end of each sync.

Why: (issue 22) on SQLite a view's computed columns have no declared type, so Superset could not
treat 25 of them as times or numbers (`project_storage_daily.day` was not temporal); and every
query recomputed them from all checkpoints, so Datasette's facets on `job_facts` timed out at
189k checkpoints and a group-by took seconds at a million. Now:

- `checkpoint_facts`, `job_facts`, `project_storage_daily`, `gpu_hours_daily` and
  `checkpoint_lora_modules` are tables with a declared type on every column (the types of
  `archiver/views.py`, as the views had them on PostgreSQL), with indexes for the common filters;
- what the views computed is unchanged and lives on as views named `<name>_live`; the tables
  hold their rows as of the end of the last sync (`archiver.facts.refresh`), which rewrites them
  in one transaction, so a reader sees the previous rows or the new ones, never a mix;
- `job_facts_live` reads the `checkpoint_facts` table (refreshed first), as it read the view.

The tables are made empty: `archiver db upgrade` (and `sync --migrate`) fills them once the last
revision it runs is done, from the views as that revision left them. Downgrade drops them and puts
the views back.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op
from alembic.util import load_python_file

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v9, v12, v13 = _load("0009"), _load("0012"), _load("0013")

# Each relation's columns, in order, as `name kind`; in refresh order (job_facts reads checkpoint_facts).
COLUMNS: dict[str, tuple[str, ...]] = {
    "checkpoint_facts": (
        "project_id text",
        "project_name text",
        "project_label text",
        "team_name text",
        "job_id text",
        "job_name text",
        "checkpoint_id text",
        "checkpoint_type text",
        "created_at time",
        "size_bytes bigint",
        "size_gib float",
        "sync_status text",
        "is_uploaded bool",
        "base_model text",
        "lora_r bigint",
        "lora_alpha float",
        "lora_dropout float",
        "lora_target_modules json",
        "lora_target_modules_text text",
        "job_status text",
        "job_creator_email text",
        "job_created_at time",
        "instance_type_name text",
        "gpu_type text",
        "gpu_count int",
        "first_seen_at time",
        "last_seen_at time",
        "deleted_at time",
        "project_deleted_at time",
    ),
    "job_facts": (
        "job_id text",
        "job_name text",
        "project_id text",
        "project_name text",
        "project_label text",
        "team_name text",
        "job_status text",
        "job_status_since time",
        "hours_in_status float",
        "error_message text",
        "checkpoint_sync_status text",
        "creator_email text",
        "instance_type_name text",
        "gpu_type text",
        "gpu_count int",
        "node_count int",
        "node_count_source text",
        "total_gpu_count bigint",
        "created_at time",
        "updated_at time",
        "hours_since_update float",
        "checkpoint_count bigint",
        "live_checkpoint_count bigint",
        "checkpoints_size_bytes bytes",
        "checkpoints_size_gib float",
        "live_size_bytes bytes",
        "live_size_gib float",
        "latest_checkpoint_id text",
        "latest_checkpoint_size_bytes bigint",
        "latest_checkpoint_size_gib float",
        "first_checkpoint_at time",
        "last_checkpoint_at time",
        "hours_to_first_checkpoint float",
        "wall_clock_hours float",
        "gpu_hours_estimate float",
        "first_seen_at time",
        "last_seen_at time",
        "deleted_at time",
        "project_deleted_at time",
    ),
    "project_storage_daily": (
        "project_id text",
        "project_name text",
        "project_label text",
        "team_name text",
        "day date",
        "live_checkpoint_count bigint",
        "live_size_bytes bytes",
        "live_size_gib float",
    ),
    "gpu_hours_daily": (
        "day date",
        "project_id text",
        "project_name text",
        "project_label text",
        "team_name text",
        "job_id text",
        "job_name text",
        "job_status text",
        "instance_type_id text",
        "instance_type_name text",
        "gpu_type text",
        "gpu_count int",
        "node_count int",
        "total_gpu_count bigint",
        "hours float",
        "gpu_hours float",
    ),
    "checkpoint_lora_modules": (
        "project_id text",
        "job_id text",
        "checkpoint_id text",
        "module text",
        "deleted_at time",
    ),
}
TYPES = {  # kind: (SQLite, PostgreSQL), as SQLAlchemy compiles archiver/views.py's types
    "text": ("TEXT", "TEXT"),
    "int": ("INTEGER", "INTEGER"),
    "bigint": ("BIGINT", "BIGINT"),
    "bytes": ("NUMERIC", "NUMERIC"),  # a sum of byte counts: exact, past 2^63 too
    "float": ("DOUBLE", "DOUBLE PRECISION"),
    "bool": ("BOOLEAN", "BOOLEAN"),
    "date": ("DATE", "DATE"),
    "time": ("DATETIME", "TIMESTAMP WITH TIME ZONE"),
    "json": ("JSON", "JSONB"),
}
INDEXES = {  # the common filters and facets
    "checkpoint_facts": ("job_id", "project_id", "created_at", "checkpoint_type"),
    "job_facts": ("project_id", "job_status"),
    "project_storage_daily": ("day", "project_id"),
    "gpu_hours_daily": ("day", "job_id", "instance_type_name"),
    "checkpoint_lora_modules": ("checkpoint_id", "module"),
}


def _views(postgresql: bool) -> dict[str, str]:
    """Each relation's CREATE VIEW statement as 0013 left it."""
    d9, d12 = (v9.PostgreSQL, v12.PostgreSQL) if postgresql else (v9.SQLite, v12.SQLite)
    return {
        "checkpoint_facts": v13.checkpoint_facts(d9),
        "job_facts": v13.job_facts(d9),
        "project_storage_daily": v13.project_storage_daily(d9),
        "gpu_hours_daily": v13.gpu_hours_daily(d12),
        "checkpoint_lora_modules": v13.checkpoint_lora_modules(d9),
    }


def _renamed(create_view: str, name: str) -> str:
    head = f"CREATE VIEW {name} AS"
    assert create_view.lstrip().startswith(head), name
    return f"CREATE VIEW {name}_live AS" + create_view.lstrip()[len(head) :]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    views = _views(postgresql)
    for name in reversed(COLUMNS):
        op.execute(f"DROP VIEW {name}")
    for name, columns in COLUMNS.items():
        op.execute(_renamed(views[name], name))
        typed = ", ".join(
            f"{column} {TYPES[kind][postgresql]}" for column, kind in (c.split() for c in columns)
        )
        op.execute(f"CREATE TABLE {name} ({typed})")
        for column in INDEXES[name]:
            op.execute(f"CREATE INDEX ix_{name}_{column} ON {name} ({column})")


def downgrade() -> None:
    views = _views(op.get_bind().dialect.name == "postgresql")
    for name in reversed(COLUMNS):
        op.execute(f"DROP VIEW {name}_live")
        op.execute(f"DROP TABLE {name}")
    for name in COLUMNS:
        op.execute(views[name])
