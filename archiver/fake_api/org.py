"""The organisation between nights: the changes a day brings (what it holds and serves: `holdings`).

Mutations move the org's own clock (never the wall clock) a minute per
change, so the same sequence of changes always yields the same responses. A job's checkpoint list
is stored only once a mutation makes it diverge from the one its plan regenerates.
"""

from __future__ import annotations

import copy
import random
from typing import Any, cast

from archiver.fake_api.generate import (
    HOUR,
    MINUTE,
    PROJECT_NAMES,
    SECOND,
    TERMINAL_STATUSES,
    Job,
    Plan,
    Project,
    checkpoint,
    generated_checkpoints,
    iso,
    parse_iso,
)
from archiver.fake_api.holdings import Holdings

_MUTATION_STEP_US = 60 * SECOND


class Organisation(Holdings):
    """A generated organisation held in memory, changed by the methods a test calls between syncs."""

    def _tick(self) -> int:
        """Advance the org's clock past every timestamp it holds, so mutations stay deterministic."""
        self._registry.clock_us += _MUTATION_STEP_US
        return self._registry.clock_us

    def _changed(self) -> None:
        """Tell cached answers they are stale."""
        self.version += 1

    def _touch(self, job: Job, us: int | None = None) -> None:
        """Move a job's and its project's updated_at forward after a change."""
        us = self._tick() if us is None else us
        job.data["updated_at"] = iso(us)
        self._registry.bump_project(self._registry.projects[job.project_id], us)
        self._changed()

    def _materialise(self, job_id: str, job: Job) -> list[dict[str, Any]]:
        """Store a job's checkpoint list so it can diverge from the generated one."""
        if job.checkpoints is None:
            job.checkpoints = copy.deepcopy(generated_checkpoints(self.spec, job_id, job))
        return job.checkpoints

    def add_checkpoint(self, job_id: str, **overrides: Any) -> dict[str, Any]:
        """Append the job's next checkpoint (created now), apply `overrides`, and return it."""
        with self.lock:
            job = self._get_job(job_id)
            checkpoints = self._materialise(job_id, job)
            steps = [int(c["checkpoint_id"].rpartition("-")[2]) for c in checkpoints if _is_step(c)]
            step = max(steps, default=0) + job.plan.stride
            rng = random.Random(f"{self.spec.seed}:{job_id}:add:{step}")
            active = job.data["current_status"] not in TERMINAL_STATUSES
            added = checkpoint(rng, job_id, job.plan, 0, active, self.spec.syncing_fraction)
            now = self._tick()
            added["checkpoint_id"] = f"checkpoint-{step}"
            added["created_at"] = iso(now)
            added = copy.deepcopy({**added, **overrides})
            checkpoints.append(added)
            self._touch(job, now)
            return copy.deepcopy(added)

    def delete_checkpoint(self, job_id: str, checkpoint_id: str) -> None:
        """Remove one checkpoint from a job."""
        with self.lock:
            job = self._get_job(job_id)
            checkpoints = self._materialise(job_id, job)
            checkpoints.remove(_find_checkpoint(checkpoints, job_id, checkpoint_id))
            self._touch(job)

    def update_checkpoint(self, job_id: str, checkpoint_id: str, **fields: Any) -> None:
        """Change fields of one checkpoint, e.g. sync_status="COMPLETE"."""
        with self.lock:
            job = self._get_job(job_id)
            found = _find_checkpoint(self._materialise(job_id, job), job_id, checkpoint_id)
            found.update(copy.deepcopy(fields))
            self._touch(job)

    def set_job(self, job_id: str, **fields: Any) -> None:
        """Change fields of a job; updated_at moves forward unless given.

        A job that becomes terminal finishes syncing: its SYNCING checkpoints turn COMPLETE.
        """
        if frozen := {"id", "training_project_id", "training_project"} & set(fields):
            raise ValueError(f"set_job cannot change {sorted(frozen)}")
        with self.lock:
            job = self._get_job(job_id)
            status = fields.get("current_status", job.data["current_status"])
            if status != job.data["current_status"]:
                # Freeze the list under the old status so regeneration cannot reshuffle it.
                checkpoints = self._materialise(job_id, job)
                if status in TERMINAL_STATUSES:
                    _finish_syncing(job, checkpoints)
            job.data.update(copy.deepcopy(fields))
            if "created_at" in fields:
                job.created_us = parse_iso(fields["created_at"])
            if "updated_at" in fields:
                given = parse_iso(fields["updated_at"])
                self._registry.clock_us = max(self._registry.clock_us, given)
                self._registry.bump_project(self._registry.projects[job.project_id], given)
                self._changed()
            else:
                self._touch(job)

    def set_project(self, project_id: str, **fields: Any) -> None:
        """Change fields of a project, e.g. name or team_name; updated_at moves forward unless given.

        A new name reaches the `training_project` summary every job of the project carries.
        """
        if frozen := {"id", "latest_job"} & set(fields):
            raise ValueError(f"set_project cannot change {sorted(frozen)}")
        with self.lock:
            project = self._get_project(project_id)
            project.data.update(copy.deepcopy(fields))
            if "name" in fields:
                project.summary["name"] = fields["name"]
            if "created_at" in fields:
                project.created_us = parse_iso(fields["created_at"])
            if "updated_at" in fields:
                project.updated_us = parse_iso(fields["updated_at"])
                self._registry.clock_us = max(self._registry.clock_us, project.updated_us)
            else:
                self._registry.bump_project(project, self._tick())
            self._changed()

    def delete_job(self, job_id: str) -> None:
        """Remove a job and its checkpoints."""
        with self.lock:
            job = self._get_job(job_id)
            del self._registry.jobs[job_id]
            project = self._registry.projects[job.project_id]
            project.job_ids.remove(job_id)
            self._registry.bump_project(project, self._tick())
            self._changed()

    def delete_project(self, project_id: str) -> None:
        """Remove a project and all of its jobs."""
        with self.lock:
            project = self._get_project(project_id)
            for job_id in project.job_ids:
                del self._registry.jobs[job_id]
            del self._registry.projects[project_id]
            self._changed()

    def add_project(self, jobs: int = 1, checkpoints_per_job: int = 3) -> str:
        """Add a project created now whose jobs all completed with exactly `checkpoints_per_job` each."""
        with self.lock:
            self._added_projects += 1
            rng = random.Random(f"{self.spec.seed}:project:{self._added_projects}")
            name = f"{rng.choice(PROJECT_NAMES)}-new-{self._added_projects}"
            project = self._registry.add_project(rng, name, self._tick())
            job_us = project.created_us - project.created_us % SECOND
            for _ in range(jobs):
                job_us += rng.randrange(10, 120) * MINUTE
                self._registry.add_job(rng, project, job_us, "TRAINING_JOB_COMPLETED", checkpoints_per_job)
            self._changed()
            return cast(str, project.data["id"])

    def start_job(self, project_id: str, status: str = "TRAINING_JOB_RUNNING") -> str:
        """Start a job in a project now, with no checkpoints yet, and return its id."""
        with self.lock:
            project = self._get_project(project_id)
            self._started_jobs += 1
            rng = random.Random(f"{self.spec.seed}:started:{self._started_jobs}")
            job = self._registry.add_job(rng, project, self._tick(), status, 0)
            self._changed()
            return cast(str, job.data["id"])

    def wait(self, us: int) -> None:
        """Let `us` microseconds pass on the org's clock: what happens next happens that much later."""
        with self.lock:
            self._registry.clock_us += us

    def place_project(self, data: dict[str, Any]) -> None:
        """Add a project exactly as given, its `id` included: a fixed example beside the generated ones."""
        with self.lock:
            project_id = data["id"]
            created_us, updated_us = parse_iso(data["created_at"]), parse_iso(data["updated_at"])
            summary = {"id": project_id, "name": data["name"]}
            self._registry.projects[project_id] = Project(
                copy.deepcopy(data), summary, created_us, updated_us
            )
            self._registry.ids.add(project_id)
            self.fixed.add(project_id)
            self._registry.clock_us = max(self._registry.clock_us, updated_us)
            self._changed()

    def place_job(self, data: dict[str, Any], checkpoints: list[dict[str, Any]]) -> None:
        """Add a job exactly as given, with exactly these checkpoints, to the project it names."""
        with self.lock:
            project = self._get_project(data["training_project_id"])
            created_us, updated_us = parse_iso(data["created_at"]), parse_iso(data["updated_at"])
            first = checkpoints[0] if checkpoints else {}
            kind = first.get("checkpoint_type")
            plan = Plan(
                count=len(checkpoints),
                stride=500,
                first_us=created_us,
                gap_us=HOUR,
                kind=kind if kind in ("lora", "full", "whisper") else "full",
                lora=0,
                size=first.get("size_bytes") or 0,
                done_word="COMPLETE",
            )
            job = Job(
                {**copy.deepcopy(data), "training_project": project.summary},
                project.data["id"],
                created_us,
                plan,
            )
            job.checkpoints = copy.deepcopy(checkpoints)
            self._registry.jobs[data["id"]] = job
            self._registry.ids.add(data["id"])
            self.fixed.add(data["id"])
            project.job_ids.append(data["id"])
            self._registry.bump_project(project, updated_us)
            self._registry.clock_us = max(self._registry.clock_us, updated_us)
            self._changed()


def _is_step(checkpoint: dict[str, Any]) -> bool:
    """Tell whether a checkpoint id has the `checkpoint-<step>` form."""
    prefix, _, step = str(checkpoint.get("checkpoint_id", "")).rpartition("-")
    return prefix == "checkpoint" and step.isdigit()


def _find_checkpoint(checkpoints: list[dict[str, Any]], job_id: str, checkpoint_id: str) -> dict[str, Any]:
    """Find a checkpoint by id or raise KeyError naming it."""
    for found in checkpoints:
        if found.get("checkpoint_id") == checkpoint_id:
            return found
    raise KeyError(f"no checkpoint {checkpoint_id!r} in training job {job_id!r}")


def _finish_syncing(job: Job, checkpoints: list[dict[str, Any]]) -> None:
    """Mark every SYNCING checkpoint of a job that just ended as synced."""
    for found in checkpoints:
        if found.get("sync_status") == "SYNCING":
            found["sync_status"] = job.plan.done_word or "COMPLETE"
    if job.data.get("checkpoint_sync_status") == "SYNCING":
        job.data["checkpoint_sync_status"] = "COMPLETED"
