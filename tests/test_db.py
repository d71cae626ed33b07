"""The bulk upsert: executemany on SQLite, COPY through a staging table on PostgreSQL, same results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver import bulk, db
from archiver.schema import instance_types

NIGHT_1 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
NIGHT_2 = NIGHT_1 + timedelta(days=1)


def instance_type(index: int, now: datetime, **changes: Any) -> dict[str, Any]:
    row = {
        "id": f"type-{index}",
        "name": None if index % 7 == 0 else f"{index}x ünïcødé '; --",
        "memory_limit_mib": index * 1024,
        "millicpu_limit": 2**62 + index,
        "gpu_count": index % 9,
        "gpu_type": "H100",
        "gpu_memory_limit_mib": None,
        "extra": None if index % 3 else {"zone": "us-east", "tags": [index, None, True]},
        "first_seen_at": now,
        "last_seen_at": now,
        "valid_from": NIGHT_1,
        "nodes": None if index % 5 else index % 4 + 1,
    }
    return row | changes


def archived(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as connection:
        return {row.id: tuple(row) for row in connection.execute(sa.select(instance_types))}


def expected(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[column.name] for column in instance_types.c)


def test_many_rows_round_trip_and_update_in_place(archive: Engine) -> None:
    # More rows than one SQLite batch, and timestamps given in another zone.
    east = timezone(timedelta(hours=5))
    first = [instance_type(i, NIGHT_1.astimezone(east)) for i in range(db.BATCH_ROWS + 234)]
    with archive.begin() as connection:
        db.upsert(connection, instance_types, first, key=["id"])
    assert archived(archive) == {row["id"]: expected(row) for row in first}

    many = db.STAGE_MIN_ROWS  # on PostgreSQL, through the staging table; fewer go as VALUES
    second = [
        instance_type(i, NIGHT_2, gpu_count=99) if i % 10 == 0 else instance_type(i, NIGHT_2)
        for i in range(many)
    ]
    added = [instance_type(5000 + i, NIGHT_2) for i in range(many)]
    few = [instance_type(9000 + i, NIGHT_2) for i in range(7)] + [instance_type(2, NIGHT_2, gpu_count=42)]
    with archive.begin() as connection:
        db.upsert(connection, instance_types, second, key=["id"])
        # A second statement on the same table in one transaction stages only its own rows.
        db.upsert(connection, instance_types, added, key=["id"])
        db.upsert(connection, instance_types, few, key=["id"])
    found = archived(archive)
    assert len(found) == len(first) + len(added) + len(few) - 1
    assert found["type-0"] == expected(instance_type(0, NIGHT_2, gpu_count=99, first_seen_at=NIGHT_1))
    assert found["type-1"] == expected(instance_type(1, NIGHT_2, first_seen_at=NIGHT_1))
    assert found["type-2"] == expected(instance_type(2, NIGHT_2, gpu_count=42, first_seen_at=NIGHT_1))
    assert found[f"type-{many}"] == expected(first[many])
    for row in added + few[:-1]:  # both ways store the same values
        assert found[row["id"]] == expected(row)


def test_a_key_given_twice_keeps_the_last_row(archive: Engine) -> None:
    rows = [
        instance_type(1, NIGHT_1, name="first"),
        instance_type(2, NIGHT_1),
        instance_type(1, NIGHT_1, name="last"),
    ]
    with archive.begin() as connection:
        db.upsert(connection, instance_types, rows, key=["id"])
    assert archived(archive)["type-1"][1] == "last"


def test_a_key_given_twice_keeps_the_last_row_within_and_across_statements(archive: Engine) -> None:
    """SQLite writes many rows a statement (`bulk.MAX_ROWS_PER_STATEMENT`): a key twice in one of them,
    in two of them, or in one and in a piece of the rest, keeps the later row, as row by row did."""
    size = bulk.MAX_ROWS_PER_STATEMENT
    rows = [instance_type(i, NIGHT_1, name=f"row {i}") for i in range(2 * size + 17)]
    twice = {3: 3 + size // 2, 7: 7 + size, 11: 2 * size + 5}  # earlier position -> later one
    for earlier, later in twice.items():
        rows[later] = instance_type(earlier, NIGHT_1, name=f"row {later}")
    with archive.begin() as connection:
        db.upsert(connection, instance_types, rows, key=["id"])
    found = archived(archive)
    assert len(found) == len(rows) - len(twice)
    for earlier, later in twice.items():
        assert found[f"type-{earlier}"][1] == f"row {later}"
    assert found["type-4"][1] == "row 4"


def test_the_rows_a_full_statement_leaves_go_in_a_few_statements(archive: Engine) -> None:
    """On SQLite, the 255 rows after two full statements go as 128, 64, ... 1 rows a statement, not
    one statement a row: each statement is a wait for the GIL while fetch threads hold it."""
    size = bulk.MAX_ROWS_PER_STATEMENT
    rows = [instance_type(i, NIGHT_1, name=f"row {i}") for i in range(2 * size + 255)]
    rows[-1] = instance_type(2 * size, NIGHT_1, name="the last row")  # its key is in the rest twice
    statements: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.startswith("INSERT INTO instance_types"):
            statements.append(len(parameters) if many else 1)

    sa.event.listen(archive, "before_cursor_execute", count)
    try:
        with archive.begin() as connection:
            db.upsert(connection, instance_types, rows, key=["id"])
    finally:
        sa.event.remove(archive, "before_cursor_execute", count)
    found = archived(archive)
    assert len(found) == len(rows) - 1
    assert found[f"type-{2 * size}"][1] == "the last row"
    assert found[f"type-{2 * size + 253}"] == expected(rows[-2])
    if archive.dialect.name == "sqlite":
        assert statements == [1] * 10  # 2 full, then 128, 64, 32, 16, 8, 4, 2, 1


def test_only_if_changed_leaves_equal_rows_alone(archive: Engine) -> None:
    with archive.begin() as connection:
        db.upsert(
            connection, instance_types, [instance_type(1, NIGHT_1), instance_type(2, NIGHT_1)], key=["id"]
        )
    later = [instance_type(1, NIGHT_2), instance_type(2, NIGHT_2, name="renamed")]
    with archive.begin() as connection:
        keep = ("first_seen_at", "last_seen_at")
        db.upsert(connection, instance_types, later, key=["id"], keep=keep, only_if_changed=True)
    found = archived(archive)
    assert found["type-1"] == expected(instance_type(1, NIGHT_1))
    assert found["type-2"][1] == "renamed"


def test_a_failed_transaction_leaves_nothing_staged(archive: Engine) -> None:
    try:
        with archive.begin() as connection:
            db.upsert(connection, instance_types, [instance_type(1, NIGHT_1)], key=["id"])
            raise RuntimeError("the writer failed")
    except RuntimeError:
        pass
    with archive.begin() as connection:
        db.upsert(connection, instance_types, [instance_type(2, NIGHT_1)], key=["id"])
    assert set(archived(archive)) == {"type-2"}


def test_driver_rows_convert_each_value_as_its_column_would() -> None:
    """Converted once per distinct object, nulls as the converter makes them, and a converter that
    cannot take a null is only asked for the values it gets."""
    calls: list[Any] = []

    def shout(value: Any) -> Any:
        calls.append(value)
        return value.upper()

    def null_as_text(value: Any) -> Any:
        return "null" if value is None else value

    same = "kept"
    rows: list[dict[str, Any]] = [{"a": same, "b": None}, {"a": same, "b": "x"}, {"a": "other", "b": None}]
    assert bulk.driver_rows(rows, ["a", "b"], [shout, null_as_text]) == [
        ("KEPT", "null"),
        ("KEPT", "x"),
        ("OTHER", "null"),
    ]
    assert calls == [None, same, "other"]  # asked once whether it keeps a null (it cannot), then per object
