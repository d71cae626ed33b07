"""Orchestrate a sync: discover projects and jobs, fetch checkpoints concurrently, normalize,
and write whole jobs, one transaction per batch of jobs, from a single writer.

A run holds the database's sync lock, records itself in `sync_runs`, skips jobs whose
checkpoints cannot have changed (unless `full`), and marks what the API stopped listing
as deleted, but only where it read a complete listing. Its steps, each a module: plan
(`plan`), read the listings (`listings`, `checkpoints`, with `fetching`), and record the run
(`run`); `context` is what they share.
"""

from __future__ import annotations

from archiver.sync.fetching import STOP_GRACE_S, Fetched, bounded, fetch
from archiver.sync.report import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_RECHECK_AFTER,
    LIMIT,
    Failure,
    Scope,
    SyncOptions,
    SyncReport,
    utc_now,
)
from archiver.sync.run import ApiSettings, Sync, run_sync, sync_archive

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_RECHECK_AFTER",
    "LIMIT",
    "STOP_GRACE_S",
    "ApiSettings",
    "Failure",
    "Fetched",
    "Scope",
    "Sync",
    "SyncOptions",
    "SyncReport",
    "bounded",
    "fetch",
    "run_sync",
    "sync_archive",
    "utc_now",
]
