"""The schema is owned by Alembic: revisions apply, revert and match archiver.schema."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from archiver import migrate
from archiver.errors import SchemaOutOfDate
from archiver.schema import SCHEMA_REVISION, metadata

from .conftest import scalar

REPO = Path(__file__).resolve().parent.parent


def archive_tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_one_head_and_every_revision_explains_itself() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    assert len(scripts.get_heads()) == 1
    # The fast schema gate compares with this constant instead of reading the revision files.
    assert scripts.get_current_head() == SCHEMA_REVISION
    for script in scripts.walk_revisions():
        assert script.doc and "Why:" in (script.module.__doc__ or ""), script.revision


def test_upgrade_downgrade_upgrade(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert archive_tables(engine) == set(metadata.tables)
    assert migrate.current_revision(engine) == SCHEMA_REVISION
    migrate.downgrade(engine, "base")
    assert archive_tables(engine) == set()
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert archive_tables(engine) == set(metadata.tables)


def test_each_revision_steps_down_and_up(engine: Engine) -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    for revision in revisions:
        migrate.upgrade(engine, revision)
        assert migrate.current_revision(engine) == revision
    for revision in reversed(revisions):
        migrate.downgrade(engine, revision)
        migrate.downgrade(engine, "-1")
        migrate.upgrade(engine, revision)
        assert migrate.current_revision(engine) == revision


def schema_differences(engine: Engine, target: sa.MetaData) -> list[object]:
    """What Alembic's autogenerate finds between the database and `target`: types and server defaults too."""
    with engine.connect() as connection:
        options = {"compare_type": True, "compare_server_default": True}
        return list(compare_metadata(MigrationContext.configure(connection, opts=options), target))


def test_models_match_migrations(archive: Engine) -> None:
    assert schema_differences(archive, metadata) == []


def test_a_changed_server_default_is_a_difference(archive: Engine) -> None:
    changed = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["sync_runs"].c.requests.server_default = sa.DefaultClause("1")
    differences = schema_differences(archive, changed)
    assert len(differences) == 1 and "modify_default" in repr(differences), differences


def test_released_revisions_are_frozen() -> None:
    """A revision that has landed never changes: an archive already at it would never see the edit."""
    migrations = REPO / "migrations"
    released = {}
    for line in (migrations / "released.sha256").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        released[name] = digest
    for path in sorted((migrations / "versions").glob("*.py")):
        name = path.relative_to(migrations).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert name in released, (
            f"{name} is not in migrations/released.sha256; when it lands, record it: "
            f"(cd migrations && sha256sum {name} >> released.sha256)"
        )
        assert released[name] == digest, (
            f"{name} changed after it was released; a change to a released schema is a new revision"
        )


def test_empty_database_gets_the_schema(engine: Engine) -> None:
    migrate.ensure_current(engine)
    assert migrate.current_revision(engine) == SCHEMA_REVISION


def test_older_schema_is_refused_with_the_fix(engine: Engine) -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    migrate.upgrade(engine, revisions[-2])
    with pytest.raises(SchemaOutOfDate, match="archiver db upgrade"):
        migrate.ensure_current(engine)
    migrate.ensure_current(engine, migrate=True)
    assert migrate.current_revision(engine) == SCHEMA_REVISION


def test_alembic_command_from_repo_root_reads_the_environment(database_url: str) -> None:
    env = {**os.environ, "ARCHIVER_DATABASE_URL": database_url}
    alembic = Path(sys.executable).parent / "alembic"
    done = subprocess.run(
        [str(alembic), "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert scalar(engine, "SELECT version_num FROM alembic_version") == SCHEMA_REVISION
    finally:
        engine.dispose()
