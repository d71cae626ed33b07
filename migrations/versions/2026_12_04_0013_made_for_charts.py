"""Made for charts: a unique `project_label` in every facts view, and `is_uploaded` beside the raw upload state.

Why: (issue 22) project names are not unique, so a chart grouped by `project_name` merged two
projects into one bar; and a checkpoint's upload state arrives as `COMPLETE` (the spec's word),
`COMPLETED` (the job-level enum's) or empty, so "uploaded checkpoints" needed three spellings.

- `project_label` (in `checkpoint_facts`, `job_facts`, `project_storage_daily`, `gpu_hours_daily`):
  the project's name, with its id in parentheses where another project has the same name
  (`qwen3-8b-support-sft (9oylhza)`), the id where it has none: one label per project, readable.
- `checkpoint_facts.is_uploaded`: true for `COMPLETE` or `COMPLETED` in any case, false for any
  other state (`SYNCING`), null where none was sent; `sync_status` keeps the value as received.
- `checkpoint_facts.lora_target_modules` is one type, a JSON array: a config that gave its modules
  as one string (a regular expression, in PEFT) reads as an array holding it (`lora_adapter_configs`
  keeps it as sent). polars failed on a column of lists and strings.
- `checkpoint_lora_modules`: one row per checkpoint and module, to group and filter by module.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import op
from alembic.util import load_python_file

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v8, v9, v12 = _load("0008"), _load("0009"), _load("0012")


def _replace(sql: str, old: str, new: str) -> str:
    """`sql` with `old`, which must occur exactly once, replaced by `new` (0008's helper)."""
    return str(v8._replace(sql, old, new))


LABEL = (
    "CASE WHEN p.name IS NULL OR p.name = '' THEN p.id "
    "WHEN EXISTS (SELECT 1 FROM training_projects o WHERE o.name = p.name AND o.id <> p.id) "
    "THEN p.name || ' (' || p.id || ')' "
    "ELSE p.name END"
)
UPLOADED = (
    "CASE WHEN c.sync_status IS NULL OR TRIM(c.sync_status) = '' THEN NULL "
    "WHEN UPPER(TRIM(c.sync_status)) IN ('COMPLETE', 'COMPLETED') THEN TRUE "
    "ELSE FALSE END"
)


def _labelled(sql: str) -> str:
    return _replace(sql, "p.name AS project_name,", f"p.name AS project_name,\n    {LABEL} AS project_label,")


def modules_array(d: Any, modules: str) -> str:
    """A config's target modules as a JSON array: a string is one module; another type, none."""
    if d.distinct == "IS NOT":  # SQLite
        return (
            f"CASE json_type({modules}) WHEN 'array' THEN {modules} "
            f"WHEN 'text' THEN json_array(json_extract({modules}, '$')) END"
        )
    return (
        f"CASE jsonb_typeof({modules}) WHEN 'array' THEN {modules} "
        f"WHEN 'string' THEN jsonb_build_array({modules} #>> '{{}}') END"
    )


def checkpoint_facts(d: Any) -> str:
    sql = _labelled(v8.checkpoint_facts(d))
    sql = _replace(
        sql,
        "    l.target_modules AS lora_target_modules,\n",
        f"    {modules_array(d, 'l.target_modules')} AS lora_target_modules,\n",
    )
    return _replace(
        sql, "c.sync_status AS sync_status,", f"c.sync_status AS sync_status,\n    {UPLOADED} AS is_uploaded,"
    )


def checkpoint_lora_modules(d: Any) -> str:
    modules = modules_array(d, "l.target_modules")
    if d.distinct == "IS NOT":  # SQLite: json_each over the array
        each, module = f"JOIN json_each({modules}) m", "CAST(m.value AS TEXT)"
    else:
        each, module = f"CROSS JOIN LATERAL jsonb_array_elements_text({modules}) AS m(module)", "m.module"
    return f"""CREATE VIEW checkpoint_lora_modules AS
SELECT
    j.training_project_id AS project_id,
    c.training_job_id AS job_id,
    c.checkpoint_id AS checkpoint_id,
    {module} AS module,
    c.deleted_at AS deleted_at
FROM checkpoints c
JOIN training_jobs j ON j.id = c.training_job_id
JOIN lora_adapter_configs l ON l.id = c.lora_adapter_config_id
{each}
"""  # noqa: S608 (constant fragments, no input)


def job_facts(d: Any) -> str:
    return _labelled(str(v9.job_facts(d)))


def project_storage_daily(d: Any) -> str:
    sql = _labelled(v8.project_storage_daily(d))
    return _replace(
        sql, "    project_name,\n    team_name,\n", "    project_name,\n    project_label,\n    team_name,\n"
    )


def gpu_hours_daily(d: Any) -> str:
    return _labelled(str(v12.gpu_hours_daily(d)))


VIEWS = ("checkpoint_facts", "job_facts", "project_storage_daily", "gpu_hours_daily")  # in dependency order


def _recreate(creators: Sequence[Callable[[Any], str]]) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for create, dialect in zip(
        creators,
        (v9.PostgreSQL, v9.PostgreSQL, v9.PostgreSQL, v12.PostgreSQL)
        if postgresql
        else (v9.SQLite, v9.SQLite, v9.SQLite, v12.SQLite),
        strict=True,
    ):
        op.execute(create(dialect))


def upgrade() -> None:
    _recreate((checkpoint_facts, job_facts, project_storage_daily, gpu_hours_daily))
    op.execute(
        checkpoint_lora_modules(v9.PostgreSQL if op.get_bind().dialect.name == "postgresql" else v9.SQLite)
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS checkpoint_lora_modules")
    _recreate((v8.checkpoint_facts, v9.job_facts, v8.project_storage_daily, v12.gpu_hours_daily))
