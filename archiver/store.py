"""Write normalized rows into the archive. Helpers take a connection and never commit:
the orchestrator in `sync.py` owns transactions.

Nothing is ever deleted or overwritten. A row whose values change keeps its earlier state in its
history table (see `schema.Versioned`); a project, job or checkpoint that the API stops listing
gets `deleted_at` (and so does everything under it), and one that comes back has it cleared,
each a new version too. An unchanged row is not written at all, so an unchanged night adds no
versions.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from archiver import reads
from archiver.bulk import getter
from archiver.db import chunked, upsert
from archiver.normalize import (
    TERMINAL_JOB_STATUSES,
    CheckpointListing,
    JobRecord,
    Row,
)
from archiver.schema import (
    VERSIONS,
    checkpoints,
    instance_types,
    lora_adapter_configs,
    training_jobs,
    training_projects,
)
from archiver.streamed import HashedIds, LargeListing
from archiver.versioning import (
    WRITE_PIECE_ROWS,
    Archived,
    WriteCounts,
    archived_rows,
    retire,
    save_versions,
)

PROJECTS, INSTANCE_TYPES, JOBS, CHECKPOINTS = (
    VERSIONS[table.name] for table in (training_projects, instance_types, training_jobs, checkpoints)
)
# Checkpoint columns whose change makes a row "updated" (and a new version).
CHECKPOINT_VALUES = CHECKPOINTS.values
_DELETED_AT = CHECKPOINT_VALUES.index("deleted_at")
# Checkpoint ids looked up in one query by `save_large_listing`: far below SQLite's 32,766 variables.
LOOKUP_ROWS = 5_000


def _seen(rows: Iterable[Row], now: datetime) -> list[Row]:
    return [{**row, "first_seen_at": now, "last_seen_at": now, "deleted_at": None} for row in rows]


def save_listing(
    connection: Connection, project: Row, jobs: Sequence[JobRecord], now: datetime
) -> dict[str, FetchState]:
    """Write a project and the jobs its listing named; return the fetch states the jobs had before."""
    return save_listings(connection, [(project, jobs)], now)


def save_listings(
    connection: Connection, listings: Sequence[tuple[Row, Sequence[JobRecord]]], now: datetime
) -> dict[str, FetchState]:
    """Write projects and the jobs their listings named, in the order given (one project each);
    return the fetch states the jobs had before."""
    for batch in chunked(listings):
        ids = [project["id"] for project, _ in batch]
        projects = archived_rows(connection, PROJECTS, training_projects.c.id.in_(ids))
        save_versions(connection, PROJECTS, _seen([project for project, _ in batch], now), now, projects)
    states: dict[str, FetchState] = {}
    save_jobs(connection, [job for _, jobs in listings for job in jobs], now, states=states)
    return states


# Instance types described by checkpoint responses, written once the run is judged (see `save_described`).
Described = list[tuple[tuple[str, str], Row]]


def save_jobs(
    connection: Connection,
    jobs: Sequence[JobRecord],
    now: datetime,
    later: Described | None = None,
    *,
    states: dict[str, FetchState] | None = None,
) -> None:
    """Write job rows and the instance types they ran on.

    With `later`, instance types the archive already holds are not written now but added there:
    responses that complete in any order then describe them in a defined one (`save_described`).
    With `states`, the fetch state of each job as it was before is added there (see `FetchState`),
    read with the rows the jobs are compared to.
    """
    types = {record.instance_type["id"]: record.instance_type for record in jobs if record.instance_type}
    for batch in chunked(list(types.values())):
        archived = archived_rows(
            connection,
            INSTANCE_TYPES,
            instance_types.c.id.in_([t["id"] for t in batch]),
            also=("last_seen_at",),
        )
        if later is not None:  # every job's description: the batch keeps one per type
            later += [
                ((record.row["training_project_id"], record.row["id"]), record.instance_type)
                for record in jobs
                if record.instance_type and (record.instance_type["id"],) in archived
            ]
            batch = [row for row in batch if (row["id"],) not in archived]
        else:  # a type this run has seen already, as it is, is not written again: listings share a few
            batch = [row for row in batch if not _seen_as_it_is(archived.get((row["id"],)), row, now)]
        rows = [{**row, "first_seen_at": now, "last_seen_at": now} for row in batch]
        save_versions(connection, INSTANCE_TYPES, rows, now, archived)
    also = _FETCH_STATE if states is not None else ()
    for batch in chunked(list(jobs)):
        ids = [j.row["id"] for j in batch]
        archived = archived_rows(connection, JOBS, training_jobs.c.id.in_(ids), also=also)
        if states is not None:
            states.update(
                (id_, FetchState(*row.also[:-1]))
                for (id_,), row in archived.items()
                if row.also[0] is not None and row.also[-1] is None  # read, and not gone since
            )
        save_versions(connection, JOBS, _seen((record.row for record in batch), now), now, archived)


def _seen_as_it_is(before: Archived | None, row: Row, now: datetime) -> bool:
    """Whether an instance type's archived row was last seen at `now` (this run) with `row`'s values."""
    return before is not None and before.also == (now,) and before.values == _TYPE_VALUES(row)


_TYPE_VALUES = getter(INSTANCE_TYPES.values)


def save_described(connection: Connection, described: Described, now: datetime) -> None:
    """Write the instance types `save_jobs` left for later, every description of each in a defined order.

    The descriptions of a type, by the (project, job) that gave them, make one version each: a run
    that heard a type described two ways records both, the last by job id as the current state and
    each earlier one as a version ending where the next begins, a microsecond apart before `now`
    (a version's period is its key). Responses that complete in any order give the same versions.
    """
    by_type: dict[str, list[Row]] = {}
    for _, row in sorted(described, key=lambda each: each[0]):
        descriptions = by_type.setdefault(row["id"], [])
        if not descriptions or descriptions[-1] != row:  # jobs that agree make one version
            descriptions.append(row)
    for step in range(max((len(d) for d in by_type.values()), default=0), 0, -1):
        # Step k writes each type's k-th description from the end, at `now` minus (k - 1) microseconds.
        at = now - timedelta(microseconds=step - 1)
        batch_rows = [d[-step] for d in by_type.values() if len(d) >= step]
        for batch in chunked(batch_rows):
            archived = archived_rows(
                connection, INSTANCE_TYPES, instance_types.c.id.in_([t["id"] for t in batch])
            )
            rows = [{**row, "first_seen_at": now, "last_seen_at": now} for row in batch]
            save_versions(connection, INSTANCE_TYPES, rows, at, archived)


@dataclass(frozen=True)
class FetchState:
    """What the last full read of a job's checkpoints saw, and when."""

    fetched_at: datetime
    job_updated_at: datetime | None
    job_status: str | None
    all_complete: bool | None


# The columns of a FetchState, then `deleted_at`: a job gone since its read has none.
_FETCH_STATE = (
    "checkpoints_fetched_at",
    "checkpoints_fetched_job_updated_at",
    "checkpoints_fetched_job_status",
    "checkpoints_all_complete",
    "deleted_at",
)


def can_skip(
    record: JobRecord, state: FetchState | None, now: datetime, recheck_after: timedelta | None
) -> bool:
    """Whether a job's checkpoints cannot have changed since they were last read in full.

    True for a job in a terminal state whose `updated_at` and status have not moved since a
    read that found every checkpoint uploaded, unless the job is due for its periodic re-read
    (see `due_for_recheck`).
    """
    return (
        state is not None
        and bool(state.all_complete)
        and record.row["current_status"] in TERMINAL_JOB_STATUSES
        and record.row["current_status"] == state.job_status
        and state.job_updated_at == record.row["updated_at"]
        and not (recheck_after and due_for_recheck(record.row["id"], state.fetched_at, now, recheck_after))
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def due_for_recheck(job_id: str, fetched_at: datetime, now: datetime, period: timedelta) -> bool:
    """Whether a skippable job's checkpoints should be read again anyway, so none goes unverified.

    Every job is re-read at least once per `period`. Each has its own instants, `period` apart,
    at an offset drawn from its id: it is due at the first run after one of them, so the re-reads
    of jobs first read together spread evenly over the period instead of all coming due one night.
    """
    if now - fetched_at >= period:
        return True
    offset = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8]) / 2**64 * period
    latest_instant = now - (now - _EPOCH - offset) % period
    return latest_instant > fetched_at


def save_lora_configs(connection: Connection, configs: dict[str, Row], now: datetime) -> dict[str, int]:
    """Upsert distinct LoRA adapter configs; return their ids by sha256."""
    if not configs:
        return {}
    rows = [{**row, "first_seen_at": now, "last_seen_at": now} for row in configs.values()]
    upsert(connection, lora_adapter_configs, rows, key=["config_sha256"])
    ids: dict[str, int] = {}
    table = lora_adapter_configs
    for batch in chunked(list(configs)):
        query = sa.select(table.c.config_sha256, table.c.id).where(table.c.config_sha256.in_(batch))
        ids.update({sha: id_ for sha, id_ in connection.execute(query)})
    return ids


def live_projects(connection: Connection) -> set[str]:
    """The archived projects not marked deleted."""
    query = sa.select(training_projects.c.id).where(training_projects.c.deleted_at.is_(None))
    return set(connection.scalars(query))


def live_jobs(connection: Connection, project_ids: Sequence[str]) -> dict[str, set[str]]:
    """The archived jobs not marked deleted of each of these projects (one query per batch of projects)."""
    jobs = training_jobs
    found: dict[str, set[str]] = {project_id: set() for project_id in project_ids}
    for batch in chunked(project_ids):
        query = sa.select(jobs.c.training_project_id, jobs.c.id).where(
            jobs.c.training_project_id.in_(batch), jobs.c.deleted_at.is_(None)
        )
        for project_id, job_id in connection.execute(query):
            found[project_id].add(job_id)
    return found


def live_checkpoint_count(connection: Connection, job_ids: Sequence[str] | None = None) -> int:
    """How many archived checkpoints not marked deleted these jobs hold (None: the whole archive)."""
    live = checkpoints.c.deleted_at.is_(None)
    if job_ids is None:
        return int(connection.scalar(sa.select(sa.func.count()).where(live)) or 0)
    total = 0
    for batch in chunked(job_ids):
        query = sa.select(sa.func.count()).where(live, checkpoints.c.training_job_id.in_(batch))
        total += int(connection.scalar(query) or 0)
    return total


@dataclass(frozen=True)
class Loss:
    """What marking a listing's vanished entries deleted would lose: entries, and the rows beneath them."""

    what: str  # "projects", "jobs" or "checkpoints"
    live: int  # live entries of the scope before the listing
    missing: int  # of them, those the listing no longer has
    listed: int  # entries the listing has
    jobs: int | None = None  # live jobs beneath the missing projects
    checkpoints: int | None = None  # live checkpoints beneath the missing entries
    live_checkpoints: int | None = None  # live checkpoints of the whole scope

    def __str__(self) -> str:
        text = f"would mark {self.missing:,} of {self.live:,} live {self.what} deleted"
        if self.checkpoints is not None:
            jobs = f"{self.jobs:,} jobs and " if self.jobs is not None else ""
            text += f", with {jobs}{self.checkpoints:,} of {self.live_checkpoints:,} live checkpoints"
        return text


@dataclass(frozen=True)
class DeletionGuard:
    """When a listing may mark what it lacks deleted: not when that looks like a bad response.

    It weighs what would be lost. A listing that would mark more than half of its scope's live
    entries deleted (at least `MASS`), or more than half of the live checkpoints beneath its
    scope (at least `MASS`), or an empty one where rows are live, is suspect: one bad night must
    not "delete" history. `allow_mass_delete` accepts it, for one run.
    """

    allow_mass_delete: bool = False
    MASS = 10

    def refuses(self, loss: Loss) -> str | None:
        """Why marking what `loss` describes deleted is suspect (said of the listing); None when it is not."""
        if self.allow_mass_delete or not loss.missing:
            return None
        lost, held = loss.checkpoints or 0, loss.live_checkpoints or 0
        if not loss.listed:
            problem = f"is empty, but the archive holds {loss.live:,} live {loss.what} for it"
            if loss.checkpoints:
                problem += f" ({lost:,} live checkpoints)"
        elif (loss.missing * 2 > loss.live and loss.missing >= self.MASS) or (
            lost * 2 > held and lost >= self.MASS
        ):
            problem = f"{loss} (more than half)"
        else:
            return None
        return (
            f"{problem}; suspecting a bad response, nothing was marked deleted. If they really are gone, "
            "rerun with --allow-mass-delete"
        )


@dataclass(frozen=True)
class Vanished:
    """A job's checkpoints that its complete listing no longer has, to be marked deleted once the run is judged."""

    row_ids: list[Any]
    fetched: Row  # the read's fetch state, recorded when they are marked (see `_mark_fetched`)


def save_checkpoint_listings(
    connection: Connection,
    listings: Sequence[CheckpointListing],
    now: datetime,
    guard: DeletionGuard | None = None,
    defer: dict[str, Vanished] | None = None,
    later: Described | None = None,
) -> tuple[WriteCounts, dict[str, str]]:
    """Archive whole jobs' checkpoint listings: insert new rows, version changed ones, skip the rest.

    One read of the jobs' archived checkpoints decides which rows changed; only those go to
    the database, in batched native upserts; unchanged rows are not written at all. Their
    sighting is recorded once per job, in `training_jobs.checkpoints_fetched_at`: bumping a
    per-row `last_seen_at` every night would rewrite the whole table (see `_mark_checkpoints_deleted`).
    Rows a complete listing no longer has get `deleted_at`, unless `guard` refuses: then nothing
    of that job is marked, and it is returned with the reason (job id -> why), to fail. With
    `defer`, what would be marked goes there instead, for `mark_vanished` once the run is judged;
    with `later`, so do the descriptions of archived instance types (see `save_jobs`).
    """
    if not listings:
        return WriteCounts(), {}
    guard = guard or DeletionGuard()
    save_jobs(connection, [listing.job for listing in listings], now, later)
    configs: dict[str, Row] = {}
    for listing in listings:
        configs.update(listing.lora_configs)
    config_ids = save_lora_configs(connection, configs, now)

    job_ids = [listing.job.row["id"] for listing in listings]
    key = ("training_job_id", "checkpoint_id")
    archived = archived_rows(connection, CHECKPOINTS, checkpoints.c.training_job_id.in_(job_ids), key)
    seen = {"deleted_at": None, "first_seen_at": now, "last_seen_at": now}
    # Made one at a time as they are written: 100,000 checkpoints' rows in a list cost 60 MiB.
    rows = (
        _checkpoint_row(listed, config_ids, seen) for listing in listings for listed in listing.checkpoints
    )
    live_before = Counter(
        job_id for (job_id, _), before in archived.items() if before.values[_DELETED_AT] is None
    )
    counts = save_versions(connection, CHECKPOINTS, rows, now, archived, key=key, touch=False)
    # What is left in `archived` was not listed this time: gone, unless the listing cannot say so.
    vanished: dict[str, list[Any]] = {listing.job.row["id"]: [] for listing in listings}
    refused = {listing.job.row["id"]: listing.refused for listing in listings}
    for (job_id, checkpoint_id), before in archived.items():
        # A quarantined entry was listed, so it is not gone; it is just not archived this time.
        if before.values[_DELETED_AT] is None and checkpoint_id not in refused[job_id]:
            vanished[job_id].append(before.id)
    refusals: dict[str, str] = {}
    settled: list[CheckpointListing] = []
    unsettled: list[str] = []
    for listing in listings:
        job_id = listing.job.row["id"]
        done, reason = _settle(
            connection, listing, live_before[job_id], vanished[job_id], now, guard, defer, counts
        )
        if reason:
            refusals[job_id] = reason
        if done:
            settled.append(listing)
        else:
            unsettled.append(job_id)
    _mark_fetched(connection, settled, now)
    _forget_reads(connection, unsettled)
    return counts, refusals


def save_large_listing(
    connection: Connection,
    listing: LargeListing,
    now: datetime,
    guard: DeletionGuard | None = None,
    defer: dict[str, Vanished] | None = None,
    later: Described | None = None,
) -> tuple[WriteCounts, dict[str, str]]:
    """Archive a job's listing too large to hold, as `save_checkpoint_listings` does, a piece at a time.

    Each piece of entries (see `archiver.streamed`) is compared with the archived rows of its own
    checkpoints and written before the next is read; what vanished is found once every piece is in,
    from the ids listed, held as hashes (`HashedIds`, 8 bytes an id). Memory holds a piece and
    those, whatever the job's size.
    """
    guard = guard or DeletionGuard()
    job_id = listing.job.row["id"]
    save_jobs(connection, [listing.job], now, later)
    live_before = live_checkpoint_count(connection, [job_id])
    key = ("training_job_id", "checkpoint_id")
    of_job = checkpoints.c.training_job_id == job_id
    # A job read for the first time has nothing to compare with: no lookups (on PostgreSQL they would
    # be planned for the table as it was before this transaction, and scan what it wrote since), and
    # nothing that could have vanished.
    held = connection.scalar(sa.select(checkpoints.c.id).where(of_job).limit(1)) is not None
    seen = {"deleted_at": None, "first_seen_at": now, "last_seen_at": now}
    counts = WriteCounts()
    config_ids: dict[str, int] = {}
    listed = HashedIds()
    for piece in listing.pieces(WRITE_PIECE_ROWS):
        new = {sha: config for sha, config in piece.lora_configs.items() if sha not in config_ids}
        config_ids.update(save_lora_configs(connection, new, now))
        archived: dict[tuple[Any, ...], Archived] = {}
        if held:
            ids = [row["checkpoint_id"] for row in piece.checkpoints]
            for checkpoint_id in ids:
                listed.add(checkpoint_id)
            for batch in chunked(ids, LOOKUP_ROWS):
                which = sa.and_(of_job, checkpoints.c.checkpoint_id.in_(batch))
                archived.update(archived_rows(connection, CHECKPOINTS, which, key))
        rows = (_checkpoint_row(listed_row, config_ids, seen) for listed_row in piece.checkpoints)
        counts.add(save_versions(connection, CHECKPOINTS, rows, now, archived, key=key, touch=False))
    missing = _unlisted(connection, listing, listed) if held else []
    done, reason = _settle(connection, listing, live_before, missing, now, guard, defer, counts)
    if done:
        _mark_fetched(connection, [listing], now)
    else:
        _forget_reads(connection, [job_id])
    return counts, {job_id: reason} if reason else {}


def _unlisted(connection: Connection, listing: LargeListing, listed: HashedIds) -> list[Any]:
    """The row ids of the live checkpoints of a large listing's job that it neither listed nor quarantined.

    Every checkpoint listed was written live. So when no two listed ids share a hash, the live rows
    found `in` what was listed are exactly as many as were listed, unless an unlisted one shares a
    listed id's hash: then the listing's ids are read again, whole, to decide.
    """
    refused = listing.refused
    # A piece at a time: PostgreSQL's driver would otherwise hold every row of the result at once.
    live = (
        sa.select(checkpoints.c.id, checkpoints.c.checkpoint_id)
        .where(checkpoints.c.training_job_id == listing.job.row["id"], checkpoints.c.deleted_at.is_(None))
        .execution_options(yield_per=LOOKUP_ROWS)
    )
    if not listed.repeated():
        missing: list[Any] = []
        found = 0
        for row_id, checkpoint_id in connection.execute(live):
            if checkpoint_id in refused:
                continue
            if checkpoint_id in listed:
                found += 1
            else:
                missing.append(row_id)
        if found == len(listed):
            return missing
    spoken_for = refused | {
        row["checkpoint_id"] for piece in listing.pieces(WRITE_PIECE_ROWS) for row in piece.checkpoints
    }
    return [row_id for row_id, checkpoint_id in connection.execute(live) if checkpoint_id not in spoken_for]


def _settle(
    connection: Connection,
    listing: CheckpointListing | LargeListing,
    live_before: int,
    missing: list[Any],
    now: datetime,
    guard: DeletionGuard,
    defer: dict[str, Vanished] | None,
    counts: WriteCounts,
) -> tuple[bool, str | None]:
    """Mark deleted what a job's complete listing no longer has, or defer it; say whether that settled the job.

    Also say why the guard refused to, if it did. A read that does not settle the job (incomplete,
    refused, deferred) is to be forgotten: the next run reads the job again.
    """
    job_id = listing.job.row["id"]
    refusal = None
    settled = listing.complete
    if settled:
        loss = Loss("checkpoints", live_before, len(missing), listing.checkpoint_count)
        if refusal := guard.refuses(loss):
            settled = False
        elif defer is not None and missing:
            # Until then the job counts as unread: a run that stops before judging re-reads it next time.
            defer[job_id] = Vanished(missing, _fetch_state(listing))
            settled = False
        else:
            for batch in chunked(missing):
                counts.deleted += _mark_checkpoints_deleted(connection, checkpoints.c.id.in_(batch), now)
    return settled, refusal


def _checkpoint_row(listed: Row, config_ids: dict[str, int], seen: Row) -> Row:
    sha = listed["lora_config_sha256"]
    row = {**listed, "lora_adapter_config_id": config_ids[sha] if sha else None, **seen}
    del row["lora_config_sha256"]
    return row


def _forget_reads(connection: Connection, job_ids: Sequence[str]) -> None:
    """Make the next run read these jobs' checkpoints again: their last read did not settle them."""
    for batch in chunked(job_ids):
        connection.execute(
            sa.update(training_jobs)
            .where(training_jobs.c.id.in_(batch))
            .values(checkpoints_all_complete=None)
        )


def _fetch_state(listing: CheckpointListing | LargeListing) -> Row:
    return {
        "job_id": listing.job.row["id"],
        "job_updated_at": listing.job.row["updated_at"],
        "job_status": listing.job.row["current_status"],
        "all_complete": listing.all_complete,
    }


def _mark_fetched(
    connection: Connection, listings: Sequence[CheckpointListing | LargeListing], now: datetime
) -> None:
    reads.record(connection, [_fetch_state(listing) for listing in listings], now)


def mark_vanished(connection: Connection, vanished: dict[str, Vanished], now: datetime) -> int:
    """Mark deleted the checkpoints deferred by `save_checkpoint_listings`; return how many."""
    marked = 0
    for job_id in sorted(vanished):
        for batch in chunked(vanished[job_id].row_ids):
            marked += _mark_checkpoints_deleted(connection, checkpoints.c.id.in_(batch), now)
    reads.record(connection, [vanished[job_id].fetched for job_id in sorted(vanished)], now)
    return marked


def mark_deleted(
    connection: Connection, now: datetime, *, projects: Sequence[str] = (), jobs: Sequence[str] = ()
) -> int:
    """Mark projects and jobs deleted, with everything they hold; return how many checkpoints that marked.

    Baseten deletes a project's jobs and checkpoints with it, so they go together here too.
    """
    for batch in chunked(projects):
        retire(connection, PROJECTS, training_projects.c.id.in_(batch), now)
    held = sa.select(training_jobs.c.id).where(
        training_jobs.c.training_project_id.in_(projects), training_jobs.c.deleted_at.is_(None)
    )
    jobs = [*jobs, *(job_id for (job_id,) in connection.execute(held))] if projects else list(jobs)
    marked = 0
    for batch in chunked(jobs):
        # A job that comes back must be read before it can be skipped again.
        retire(connection, JOBS, training_jobs.c.id.in_(batch), now, checkpoints_all_complete=None)
        marked += _mark_checkpoints_deleted(connection, checkpoints.c.training_job_id.in_(batch), now)
    return marked


def _mark_checkpoints_deleted(connection: Connection, which: sa.ColumnElement[bool], now: datetime) -> int:
    """Mark live checkpoints deleted; return how many.

    A live checkpoint's `last_seen_at` is only written when its row is; it was also seen at
    every read of its job's checkpoints since. Marking it deleted settles that: `last_seen_at`
    becomes the job's last full read, which preceded this one.
    """
    last_read = (
        sa.select(training_jobs.c.checkpoints_fetched_at)
        .where(training_jobs.c.id == checkpoints.c.training_job_id)
        .scalar_subquery()
    )
    return retire(
        connection,
        CHECKPOINTS,
        which,
        now,
        last_seen_at=sa.func.coalesce(last_read, checkpoints.c.last_seen_at),
    )
