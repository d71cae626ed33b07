"""Nights passing in the fake organisation: what a day brings, the same for the same seed and night.

Night 0 is the organisation as generated. Each later night moves the org's clock a day on, then:
jobs waiting to run start running; every running job saves a checkpoint or two; half of them
(rounded up) finish, COMPLETED, except one that FAILS on the first night; finished jobs holding three or more
checkpoints have their oldest cleaned up (at most two jobs a night); on night 1 one project is
renamed and on night 2 another is deleted; and a new job starts. What was placed as given (the
demo's fixed examples: `Organisation.fixed`) is left as it is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from archiver.fake_api.generate import HOUR, TERMINAL_STATUSES
from archiver.fake_api.org import Organisation

DAY_US = 24 * HOUR
RENAME_NIGHT = 1
DELETE_NIGHT = 2
_RUNNING = "TRAINING_JOB_RUNNING"
_RENAMED = "-v2"  # what a rename appends to the name
_FAILURE = "CUDA out of memory. Tried to allocate 2.00 GiB"


@dataclass
class Night:
    """What one night changed in the organisation."""

    number: int
    started: list[str] = field(default_factory=list)  # job ids that began running, the new one included
    saved: int = 0  # checkpoints added
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cleaned: int = 0  # checkpoints deleted
    renamed: tuple[str, str, str] | None = None  # (project id, old name, new name)
    deleted: tuple[str, str] | None = None  # (project id, name)

    def __str__(self) -> str:
        finished = len(self.completed) + len(self.failed)
        said = [
            f"{finished} job{'s' * (finished != 1)} finished ({len(self.failed)} failed)",
            f"{len(self.started)} started",
            f"{self.saved} checkpoint{'s' * (self.saved != 1)} saved, {self.cleaned} cleaned up",
        ]
        if self.renamed:
            said.append(f"project {self.renamed[0]} renamed from {self.renamed[1]} to {self.renamed[2]}")
        if self.deleted:
            said.append(f"project {self.deleted[0]} ({self.deleted[1]}) deleted")
        return f"Night {self.number}: " + "; ".join(said)


def advance(org: Organisation) -> Night:
    """Let one more night pass in `org` and say what it changed."""
    with org.lock:
        org.night += 1
        return _play(org, org.night)


def play_until(org: Organisation, night: int) -> list[Night]:
    """Let nights pass until `org` is as it is after `night` of them (none if it already is)."""
    if night < 0:
        raise ValueError("a night number must not be negative")
    with org.lock:
        return [advance(org) for _ in range(night - org.night)]


def _play(org: Organisation, number: int) -> Night:
    """Apply night `number`'s changes, drawn from the org's seed and the night's number."""
    rng = random.Random(f"{org.spec.seed}:night:{number}")
    night = Night(number)
    org.wait(DAY_US)
    jobs = [job_id for job_id in org.job_ids() if job_id not in org.fixed]
    statuses = {job_id: org.job(job_id)["current_status"] for job_id in jobs}
    finished = [job_id for job_id in jobs if statuses[job_id] in TERMINAL_STATUSES]
    active = [job_id for job_id in jobs if statuses[job_id] not in TERMINAL_STATUSES]
    for job_id in rng.sample(finished, min(2, len(finished))):
        checkpoints = org.checkpoints(job_id)
        if len(checkpoints) >= 3:
            org.delete_checkpoint(job_id, checkpoints[0]["checkpoint_id"])
            night.cleaned += 1
    for job_id in active:
        if statuses[job_id] != _RUNNING:
            org.set_job(job_id, current_status=_RUNNING)
            night.started.append(job_id)
        for _ in range(rng.randint(1, 2)):
            org.add_checkpoint(job_id)
            night.saved += 1
    ending = set(rng.sample(active, (len(active) + 1) // 2))
    for job_id in (job_id for job_id in active if job_id in ending):
        if number == 1 and not night.failed:
            org.set_job(job_id, current_status="TRAINING_JOB_FAILED", error_message=_FAILURE)
            night.failed.append(job_id)
        else:
            org.set_job(job_id, current_status="TRAINING_JOB_COMPLETED")
            night.completed.append(job_id)
    _change_projects(org, rng, night)
    projects = [project_id for project_id in org.project_ids() if project_id not in org.fixed]
    if projects:
        night.started.append(org.start_job(rng.choice(projects)))
    return night


def _change_projects(org: Organisation, rng: random.Random, night: Night) -> None:
    """Rename one generated project on the rename night, delete another on the delete night."""
    projects = [project_id for project_id in org.project_ids() if project_id not in org.fixed]
    if night.number == RENAME_NIGHT and projects:
        project_id = rng.choice(projects)
        old = org.project(project_id)["name"]
        new = f"{old}{_RENAMED}"
        org.set_project(project_id, name=new)
        night.renamed = (project_id, old, new)
    if night.number == DELETE_NIGHT and len(projects) > 2:
        # Not the one renamed the night before, so the archive can show both stories.
        kept = {p for p in projects if org.project(p)["name"].endswith(_RENAMED)}
        project_id = rng.choice([project_id for project_id in projects if project_id not in kept] or projects)
        night.deleted = (project_id, org.project(project_id)["name"])
        org.delete_project(project_id)
