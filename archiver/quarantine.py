"""Entries a listing quarantined: kept with what was wrong, so nothing the API sent is lost.

A listing's entry that breaks the contract fails alone (see `normalize.Rejected`); its fellows are
archived. What it was, where and why goes to `rejected_entries`, in the transaction of the listing's
work, with the key masked and any text a database cannot hold spelled out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver import redaction
from archiver.normalize import Rejected, storable_text
from archiver.schema import rejected_entries


def keep(
    connection: Connection,
    run_id: int,
    endpoint: str,
    rejected: Sequence[Rejected],
    now: datetime,
) -> None:
    """Keep the entries a listing quarantined: the entry as received (key masked), the field and why."""
    if not rejected:
        return
    rows = [
        {
            "sync_run_id": run_id,
            "endpoint": endpoint,
            "project_id": _text(entry.error.project_id),
            "job_id": _text(entry.error.job_id),
            "entry_id": entry.entry_id,
            "field": _text(entry.error.field),
            "reason": redaction.redact(storable_text(entry.error.problem)),
            "entry": redaction.redact(entry.entry_json()),
            "rejected_at": now,
        }
        for entry in rejected
    ]
    connection.execute(sa.insert(rejected_entries), rows)


def _text(value: str | None) -> str | None:
    return None if value is None else storable_text(value)
