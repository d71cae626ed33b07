"""Keep every field of the latest spec as sent, quarantine bad entries alone, count a job's nodes.

Why: bodies Baseten's own clients send were rejected whole (issue 18), and fields of the latest
spec were read and dropped or kept only in `extra`:

- `rejected_entries`: a project, job or checkpoint entry that breaks the contract is quarantined
  alone (its listing's other entries are archived); its JSON, the field and the reason are kept here.
- `training_projects.latest_job_id`: the project's `latest_job`, by id (it was read and discarded).
- `training_jobs.node_count` (era D): taken out of `extra`, where jobs sent before kept it.
- `checkpoints.target` (Loops checkpoints, read by truss): taken out of `extra` likewise.
- `checkpoints.training_job_id_inferred`: true where the entry had no `training_job_id` and its job
  is the one whose listing it came from (baseten-cli's mocks send none); false for every row before.
- `instance_types.nodes`: the nodes an instance type's id or name names (`H200:2x8x128x1600`,
  "2 Nodes of 8 H200 GPUs"), computed here for the types already archived.
- `training_jobs.availability_model` now holds the value as sent ("DEDICATED" stays upper case);
  the lower-cased values already stored cannot be told apart and stay as they are.

Each new value column is in its table's `*_history` too and in the `*_versions` views, which are
recreated (with the BI views and the job status history that read them). `job_facts` counts nodes:
`node_count` as sent, else the nodes its instance type names, else 1 (`node_count_source` says which),
and `total_gpu_count` = GPUs per node x nodes, so a 2-node job of 8 H200s counts 16 GPUs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from alembic import op
from alembic.util import load_python_file
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _load(number: str) -> ModuleType:
    """An earlier revision's module, read from its (frozen) file."""
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v4, v8 = _load("0004"), _load("0008")

# The new value columns: (table, history, column, type).
NEW_COLUMNS = (
    ("training_projects", "training_project_history", "latest_job_id", sa.Text()),
    ("instance_types", "instance_type_history", "nodes", sa.Integer()),
    ("training_jobs", "training_job_history", "node_count", sa.Integer()),
    ("checkpoints", "checkpoint_history", "target", sa.Text()),
    ("checkpoints", "checkpoint_history", "training_job_id_inferred", sa.Boolean(create_constraint=False)),
)
# 0004's versioned tables, each with this revision's columns: they come after the period, where
# ALTER TABLE put them in the history tables, in the versions views too.
VERSIONED = tuple(
    (table, history, versions, identity, values, tuple(c for t, _, c, _ in NEW_COLUMNS if t == table))
    for table, history, versions, identity, values in v4.VERSIONED
)
VERSION_VIEWS = tuple(entry[2] for entry in VERSIONED)

# Frozen copy of archiver.normalize's reading of an instance type's nodes.
_NODES_IN_ID = re.compile(r"[^:]+:([1-9][0-9]{0,5})x[0-9]+x[0-9]+x[0-9]+")
_NODES_IN_NAME = re.compile(r"\b([1-9][0-9]{0,5}) nodes? of\b", re.IGNORECASE)


def _named_nodes(type_id: str, name: str | None) -> int | None:
    if match := _NODES_IN_ID.fullmatch(type_id):
        return int(match[1])
    if name and (match := _NODES_IN_NAME.search(name)):
        return int(match[1])
    return None


class PostgreSQL(v8.PostgreSQL):  # type: ignore[misc,name-defined]
    pass


class SQLite(v8.SQLite):  # type: ignore[misc,name-defined]
    pass


Dialect = type[PostgreSQL] | type[SQLite]


def job_facts(d: Dialect) -> str:
    """0008's job_facts, counting nodes from the job, its instance type, or 1."""
    sql = v8.job_facts(d)
    named = "(SELECT t.nodes FROM instance_types t WHERE t.id = j.instance_type_id)"
    sql = v8._replace(
        sql,
        f"COALESCE({d.json_count('j.extra', 'node_count')}, 1) AS node_count,",
        f"COALESCE(j.node_count, {named}, 1) AS node_count,\n"
        f"        CASE WHEN j.node_count IS NOT NULL THEN 'node_count' WHEN {named} IS NOT NULL "
        "THEN 'instance_type' ELSE 'default' END AS node_count_source,",
    )
    return str(
        v8._replace(
            sql,
            "    j.node_count AS node_count,\n",
            "    j.node_count AS node_count,\n"
            "    j.node_count_source AS node_count_source,\n"
            "    -- A BIGINT product: two 32-bit counts can overflow INTEGER on PostgreSQL.\n"
            "    CAST(it.gpu_count AS BIGINT) * j.node_count AS total_gpu_count,\n",
        )
    )


def _dialect() -> tuple[Dialect, Any]:
    return (PostgreSQL, v8.PostgreSQL) if op.get_bind().dialect.name == "postgresql" else (SQLite, v8.SQLite)


def _drop_dependent_views() -> None:
    for view in (*reversed(v8.VIEWS), "training_job_status_history", *VERSION_VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")


def _create_dependent_views(versioned: Sequence[Any], facts: Any, dialect: Any) -> None:
    for table, history, versions, identity, values, *later in versioned:
        columns = ", ".join((*identity, *values))
        after = "".join(f", {name}" for name in (later[0] if later else ()))
        op.execute(
            f"CREATE VIEW {versions} AS "  # noqa: S608 (constant fragments, no input)
            f"SELECT {columns}, valid_from, valid_to{after} FROM {history} "
            f"UNION ALL SELECT {columns}, valid_from, NULL AS valid_to{after} FROM {table}"
        )
    op.execute(
        "CREATE VIEW training_job_status_history AS "
        + v4._status_changes("training_job_versions", dialect.distinct)
    )
    op.execute(v8.checkpoint_facts(dialect))
    op.execute(facts(dialect))
    op.execute(v8.project_storage_daily(dialect))


def _rows(name: str, columns: str, where: str) -> list[Any]:
    """Rows of a current table (by id) or a history table (by id and valid_from)."""
    key = "id" if not name.endswith("_history") else "id, valid_from"
    query = f"SELECT {key}, {columns} FROM {name} WHERE {where}"  # noqa: S608 (constant fragments)
    return list(op.get_bind().execute(sa.text(query)).all())


def _update(name: str, assignments: str, row: Any, values: dict[str, Any]) -> None:
    history = name.endswith("_history")
    where = "id = :id AND valid_from = :valid_from" if history else "id = :id"
    key = {"id": row[0], **({"valid_from": row[1]} if history else {})}
    statement = sa.text(f"UPDATE {name} SET {assignments} WHERE {where}")  # noqa: S608 (constant fragments)
    statement = statement.bindparams(sa.bindparam("extra", type_=JSON))
    if history:
        statement = statement.bindparams(sa.bindparam("valid_from", type_=row_type(row[1])))
    op.get_bind().execute(statement, {**key, **values})


def row_type(value: Any) -> sa.types.TypeEngine[Any]:
    """Bind a stored valid_from back exactly as it was read: text on SQLite, a timestamp on PostgreSQL."""
    return sa.Text() if isinstance(value, str) else TS


def _extra_of(value: Any) -> dict[str, Any]:
    value = json.loads(value) if isinstance(value, str) else value
    return value if isinstance(value, dict) else {}


def _move_out_of_extra(table: str, history: str, key: str, kinds: tuple[type, ...]) -> None:
    """Set column `key` from `extra[key]` where it holds a value of `kinds`, and drop the key from `extra`."""
    for name in (table, history):
        for row in _rows(name, "extra", "extra IS NOT NULL"):
            extra = _extra_of(row[-1])
            value = extra.get(key)
            if value is None or isinstance(value, bool) or not isinstance(value, kinds):
                continue
            if isinstance(value, int) and not 1 <= value < 2**31:  # not a count an INTEGER holds
                continue
            rest = {k: v for k, v in extra.items() if k != key}
            _update(name, f"{key} = :value, extra = :extra", row, {"value": value, "extra": rest or None})


def _move_back_into_extra(table: str, history: str, key: str) -> None:
    for name in (table, history):
        for row in _rows(name, f"extra, {key}", f"{key} IS NOT NULL"):
            extra = _extra_of(row[-2])
            _update(name, "extra = :extra", row, {"extra": {**extra, key: row[-1]}})


def _fill_nodes() -> None:
    bind = op.get_bind()
    for name in ("instance_types", "instance_type_history"):
        for type_id, type_name in bind.execute(sa.text(f"SELECT DISTINCT id, name FROM {name}")).all():  # noqa: S608
            if (nodes := _named_nodes(type_id, type_name)) is not None:
                bind.execute(
                    sa.text(f"UPDATE {name} SET nodes = :nodes WHERE id = :id AND name = :name"),  # noqa: S608
                    {"nodes": nodes, "id": type_id, "name": type_name},
                )


def upgrade() -> None:
    _drop_dependent_views()
    for table, history, column, type_ in NEW_COLUMNS:
        for name in (table, history):
            with op.batch_alter_table(name) as batch:
                batch.add_column(sa.Column(column, type_))
    for name in ("checkpoints", "checkpoint_history"):
        op.execute(f"UPDATE {name} SET training_job_id_inferred = false")  # noqa: S608
    _move_out_of_extra("training_jobs", "training_job_history", "node_count", (int,))
    _move_out_of_extra("checkpoints", "checkpoint_history", "target", (str,))
    _fill_nodes()
    op.create_table(
        "rejected_entries",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("sync_run_id", sa.BigInteger(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text()),
        sa.Column("job_id", sa.Text()),
        sa.Column("entry_id", sa.Text()),
        sa.Column("field", sa.Text()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("rejected_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_entries"),
        sa.ForeignKeyConstraint(
            ["sync_run_id"], ["sync_runs.id"], name="fk_rejected_entries_sync_run_id_sync_runs"
        ),
    )
    op.create_index("ix_rejected_entries_sync_run_id", "rejected_entries", ["sync_run_id"])
    dialect, _ = _dialect()
    _create_dependent_views(VERSIONED, job_facts, dialect)


def downgrade() -> None:
    _drop_dependent_views()
    op.drop_index("ix_rejected_entries_sync_run_id", table_name="rejected_entries")
    op.drop_table("rejected_entries")
    _move_back_into_extra("training_jobs", "training_job_history", "node_count")
    _move_back_into_extra("checkpoints", "checkpoint_history", "target")
    for table, history, column, _ in reversed(NEW_COLUMNS):
        for name in (history, table):
            with op.batch_alter_table(name) as batch:
                batch.drop_column(column)
    _, dialect = _dialect()
    _create_dependent_views(v4.VERSIONED, v8.job_facts, dialect)
