"""The descriptions, published: PostgreSQL comments, docs/schema.md's column tables, Datasette metadata.

Every table, view and column carries its description as its comment (archiver/descriptions.py).
PostgreSQL gets them as `COMMENT ON ...` from the migration machinery, after every upgrade and
downgrade (`write_comments`): revisions never copy them, so a change of wording is no new revision,
and whatever objects a revision leaves are described as the code describes them.

docs/schema.md keeps its prose; the sections between `<!-- describe: NAME ... -->` and
`<!-- /describe -->` are generated. `python -m archiver.docs` rewrites them; a test fails while
the committed file is stale.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver import db
from archiver.errors import UsageError
from archiver.schema import INTERNAL_SCHEMA, metadata
from archiver.views import FACTS, INTERNAL, READ_ONLY

OBJECTS = (*metadata.tables.values(), *READ_ONLY)
"""Every table and view of the archive."""

SCHEMA_DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
REGENERATE = "python -m archiver.docs"
_MARKED = re.compile(r"^<!-- describe: ([\w ]+) -->\n.*?^<!-- /describe -->$", flags=re.S | re.M)


def section(table: sa.Table) -> str:
    """A table's or view's Markdown section: its description, then a row per column (or, for a
    view whose columns are a facts table's, described alike, a pointer to that table's)."""
    lines = [f"### `{table.name}`", ""]
    for paragraph in (table.comment or "").split("\n\n"):
        lines += [*textwrap.wrap(paragraph, 100, break_long_words=False, break_on_hyphens=False), ""]
    if (same := _described_alike(table)) is not None:
        return "\n".join([*lines, f"Its columns are those of `{same}`, described there."]) + "\n"
    lines += ["| column | meaning |", "|---|---|"]
    lines += [f"| `{c.name}` | {_cell(c.comment)} |" for c in table.columns]
    return "\n".join(lines) + "\n"


def _described_alike(table: sa.Table) -> str | None:
    """The facts table a `_live` view computes, when their columns and descriptions are the same."""
    facts = next((f for f in FACTS if f"{f.name}_live" == table.name), None)
    if facts is None or [(c.name, c.comment) for c in facts.columns] != [
        (c.name, c.comment) for c in table.columns
    ]:
        return None
    return facts.name


def _cell(text: str | None) -> str:
    return (text or "").replace("|", r"\|")


def markdown() -> str:
    """Every table's and view's section."""
    return "\n".join(section(table) for table in OBJECTS)


def fill(document: str) -> str:
    """Regenerate the marked sections of docs/schema.md; every table and view must be in one."""
    by_name = {table.name: table for table in OBJECTS}
    placed: list[str] = []

    def generate(marked: re.Match[str]) -> str:
        names = marked[1].split()
        if unknown := [name for name in names if name not in by_name]:
            raise ValueError(f"docs/schema.md names {', '.join(unknown)}, which is no table or view")
        placed.extend(names)
        sections = "\n".join(section(by_name[name]) for name in names)
        return f"<!-- describe: {marked[1]} -->\n\n{sections}\n<!-- /describe -->"

    filled = _MARKED.sub(generate, document)
    if missing := [name for name in by_name if name not in placed]:
        raise ValueError(
            f"docs/schema.md has no section for {', '.join(missing)}: "
            "name it in a `<!-- describe: ... -->` marker where it belongs"
        )
    return filled


def datasette_metadata(database_url: str) -> dict[str, Any]:
    """Datasette's metadata for the SQLite archive at `database_url`: every table, view and column described."""
    url = db.parse_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise UsageError(
            "Datasette reads SQLite files: pass --database-url sqlite:///path/to/archive.db "
            "(the metadata names the database after the file)"
        )
    tables = {
        table.name: {"description": table.comment, "columns": {c.name: c.comment for c in table.columns}}
        | ({"hidden": True} if table.name in INTERNAL else {})
        for table in OBJECTS
    }
    # Datasette names a database after its file, less the extension.
    return {"databases": {Path(url.database).stem: {"tables": tables}}}


# The archive's relations: in its schema and, on PostgreSQL, its bookkeeping's (revision 0017).
_PRESENT = """
SELECT c.relname, c.relkind, NULL AS attname, obj_description(c.oid, 'pg_class') AS comment
FROM pg_class c
WHERE c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN (current_schema(), :internal))
AND c.relkind IN ('r', 'p', 'v', 'm')
UNION ALL
SELECT c.relname, c.relkind, a.attname, col_description(c.oid, a.attnum)
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN (current_schema(), :internal))
AND c.relkind IN ('r', 'p', 'v', 'm')
"""
_KEYWORD = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}


def write_comments(connection: Connection) -> None:
    """Make each existing table's, view's and column's PostgreSQL comment its description in code."""
    if connection.dialect.name != "postgresql":
        return  # SQLite has no comments: `archiver docs --datasette` describes a SQLite archive
    present = {
        (row.relname, row.attname): row
        for row in connection.execute(sa.text(_PRESENT), {"internal": INTERNAL_SCHEMA})
    }
    quote = connection.dialect.identifier_preparer.quote
    for table in OBJECTS:
        if (table.name, None) not in present:
            continue  # not at this revision
        name = quote(table.name)
        targets = [
            (None, f"{_KEYWORD[present[table.name, None].relkind]} {name}", table.comment),
            *((c.name, f"COLUMN {name}.{quote(c.name)}", c.comment) for c in table.columns),
        ]
        for column, target, comment in targets:
            found = present.get((table.name, column))
            if found is not None and found.comment != comment:
                text = sa.literal(comment).compile(connection, compile_kwargs={"literal_binds": True})
                connection.exec_driver_sql(f"COMMENT ON {target} IS {text}")


def main() -> None:
    """Regenerate docs/schema.md's column tables from the descriptions in code."""
    if not SCHEMA_DOC.is_file():
        sys.exit(f"error: no {SCHEMA_DOC}: run this in a source checkout ")
    document = SCHEMA_DOC.read_text()
    try:
        filled = fill(document)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if filled != document:
        SCHEMA_DOC.write_text(filled)
    print(f"{SCHEMA_DOC}: {'regenerated' if filled != document else 'up to date'}")


if __name__ == "__main__":
    main()
