"""On PostgreSQL, the archiver's bookkeeping moves to its own schema, `archiver_internal`.

Why: (issue 22) every BI tool's table picker listed the kept responses, the history tables, the
`*_versions` views and the `_live` views beside the facts tables analysts chart, about as many
names again. They move, unchanged, to schema `archiver_internal`; views that read them keep
working (PostgreSQL binds a view to the relation, not its name), and the archiver's own sessions
find them by name (`archiver.db` puts the schema at the end of the search path). Roles that could
use the archive's schema may use the new one, and default privileges on tables made later in the
archive's schema are mirrored in it, so a reader `archiver db grant-read` set up still reads them.
SQLite has one namespace: nothing changes there (Datasette's metadata hides these instead).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "archiver_internal"
HISTORY = ("training_project", "instance_type", "training_job", "checkpoint")
TABLES = (
    "api_responses",
    "api_response_bodies",
    *(f"{name}_history" for name in HISTORY),
)
FACTS = (
    "checkpoint_facts",
    "job_facts",
    "project_storage_daily",
    "gpu_hours_daily",
    "checkpoint_lora_modules",
)
VIEWS = (*(f"{name}_versions" for name in HISTORY), *(f"{name}_live" for name in FACTS))

# The roles that may use the archive's schema, and the default SELECT grants on tables in it:
# (grantor role, grantee role; 0 is PUBLIC).
_USAGE = """
SELECT acl.grantee FROM pg_namespace n, aclexplode(n.nspacl) acl
WHERE n.nspname = current_schema() AND acl.privilege_type = 'USAGE' AND acl.grantee <> n.nspowner
"""
_DEFAULT_SELECT = """
SELECT d.defaclrole, acl.grantee FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace,
aclexplode(d.defaclacl) acl
WHERE n.nspname = %(schema)s AND d.defaclobjtype = 'r' AND acl.privilege_type = 'SELECT'
"""


def _role(oid: int) -> str:
    return "PUBLIC" if oid == 0 else _quote(_name(oid))


def _name(oid: int) -> str:
    name = op.get_bind().exec_driver_sql(f"SELECT pg_get_userbyid({int(oid)})").scalar()
    assert isinstance(name, str)
    return name


def _quote(name: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote(name)


def _default_select(grantor: int, grantee: int, *, grant: bool) -> None:
    """Let `grantee` read the tables `grantor` makes in the schema later, or no longer."""
    change = "GRANT SELECT ON TABLES TO" if grant else "REVOKE SELECT ON TABLES FROM"
    op.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {_role(grantor)} IN SCHEMA {SCHEMA} {change} {_role(grantee)}"
    )


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"CREATE SCHEMA {SCHEMA}")
    for grantee in bind.exec_driver_sql(_USAGE).scalars().all():
        op.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {_role(grantee)}")
    home = bind.exec_driver_sql("SELECT current_schema()").scalar_one()
    for grantor, grantee in bind.exec_driver_sql(_DEFAULT_SELECT, {"schema": home}).all():
        _default_select(grantor, grantee, grant=True)
    for table in TABLES:
        op.execute(f'ALTER TABLE "{table}" SET SCHEMA {SCHEMA}')
    for view in VIEWS:
        op.execute(f'ALTER VIEW "{view}" SET SCHEMA {SCHEMA}')


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    home = _quote(bind.exec_driver_sql("SELECT current_schema()").scalar_one())
    for view in VIEWS:
        op.execute(f'ALTER VIEW {SCHEMA}."{view}" SET SCHEMA {home}')
    for table in TABLES:
        op.execute(f'ALTER TABLE {SCHEMA}."{table}" SET SCHEMA {home}')
    # Default privileges in the schema go with it; anything else left there stops the drop.
    for grantor, grantee in bind.exec_driver_sql(_DEFAULT_SELECT, {"schema": SCHEMA}).all():
        _default_select(grantor, grantee, grant=False)
    op.execute(f"DROP SCHEMA {SCHEMA}")
