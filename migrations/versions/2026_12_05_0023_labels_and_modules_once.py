"""`checkpoint_facts_live` works out each project's label and each LoRA config's modules once, not once per checkpoint.

Why: (issue 21) a sync computes `checkpoint_facts` rows from this view for every checkpoint it writes.
Each row asked whether another project has the same name (for `project_label`) and unpacked its
LoRA config's target modules from JSON, sorted them and joined them into text, though there are a
few projects and configs and many checkpoints: on PostgreSQL, of 647 ms computing the view over
92,520 checkpoints, about 0.2 s went to the 92,520 name lookups and 0.2 s to the 53,832 unpackings.
Both now come from a subquery over the projects and one over the configs, each kept whole (`OFFSET
0` on PostgreSQL, `LIMIT -1` on SQLite) so that the database computes it once per statement rather
than folding it back into every row. Rewriting `checkpoint_facts` of 92,520 checkpoints, twice
each: SQLite 0.63 to 0.41 s, PostgreSQL 1.37-1.57 to 0.85-0.91 s; the rows of a batch of 100 jobs,
four times each: SQLite 54-82 to 42-48 ms, PostgreSQL 88-126 to 59-167 ms. Its columns and rows are
unchanged; on PostgreSQL it is replaced in place, keeping its grants and description.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op
from alembic.util import load_python_file

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load(number: str) -> ModuleType:
    (path,) = Path(__file__).parent.glob(f"*_{number}_*.py")
    return load_python_file(path.parent, path.name)


v9, v13, v14 = _load("0009"), _load("0013"), _load("0014")

PROJECTS = "JOIN training_projects p ON p.id = j.training_project_id\n"
CONFIGS = "LEFT JOIN lora_adapter_configs l ON l.id = c.lora_adapter_config_id\n"


def _line(sql: str, alias: str) -> str:
    """The select list's line that computes column `alias`."""
    (line,) = [line for line in sql.splitlines(keepends=True) if line.rstrip().endswith(f" AS {alias},")]
    return line


def _expression(line: str, alias: str) -> str:
    return line.strip().removesuffix(f" AS {alias},")


def checkpoint_facts(postgresql: bool, *, once: bool) -> str:
    """`CREATE VIEW checkpoint_facts_live` as revision 0014 made it, or as this one makes it."""
    sql = str(
        v14._renamed(v13.checkpoint_facts(v9.PostgreSQL if postgresql else v9.SQLite), "checkpoint_facts")
    )
    if not once:
        return sql
    whole = "OFFSET 0" if postgresql else "LIMIT -1"  # a subquery the planner must not fold into the join
    label = _line(sql, "project_label")
    modules = _line(sql, "lora_target_modules")
    text = _line(sql, "lora_target_modules_text")
    sql = v13._replace(sql, label, "    p.label AS project_label,\n")
    sql = v13._replace(sql, modules, "    l.modules AS lora_target_modules,\n")
    sql = v13._replace(sql, text, "    l.modules_text AS lora_target_modules_text,\n")
    label_of = _expression(label, "project_label")
    projects = f"SELECT p.id, p.name, p.team_name, p.deleted_at, {label_of} AS label FROM training_projects p"  # noqa: S608 (constant fragments, no input)
    modules_of, text_of = (
        _expression(modules, "lora_target_modules"),
        _expression(text, "lora_target_modules_text"),
    )
    configs = (
        "SELECT\n"
        "        l.id, l.r, l.lora_alpha, l.lora_dropout,\n"
        f"        {modules_of} AS modules,\n"
        f"        {text_of} AS modules_text\n"
        "    FROM lora_adapter_configs l"
    )
    sql = v13._replace(
        sql, PROJECTS, f"JOIN (\n    {projects} {whole}\n) p ON p.id = j.training_project_id\n"
    )
    sql = v13._replace(
        sql, CONFIGS, f"LEFT JOIN (\n    {configs} {whole}\n) l ON l.id = c.lora_adapter_config_id\n"
    )
    return str(sql)


def _recreate(*, once: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    sql = checkpoint_facts(postgresql, once=once)
    head = "CREATE VIEW checkpoint_facts_live AS"
    assert sql.startswith(head)
    if postgresql:  # in place, in the schema revision 0017 moved it to: grants and description stay
        op.execute(sql.replace(head, "CREATE OR REPLACE VIEW archiver_internal.checkpoint_facts_live AS", 1))
    else:
        op.execute("DROP VIEW checkpoint_facts_live")
        op.execute(sql)


def upgrade() -> None:
    _recreate(once=True)


def downgrade() -> None:
    _recreate(once=False)
