"""The organisation between nights: what it holds now, and the changes a day brings.

Reads return deep copies. Mutations move the org's own clock (never the wall clock) a minute per
change, so the same sequence of changes always yields the same responses. A job's checkpoint list
is stored only once a mutation makes it diverge from the one its plan regenerates.
"""

from __future__ import annotations

import copy
import random
import threading
from typing import Any, cast

from archiver.fake_api.generate import (
    HOUR,
    MINUTE,
    PROJECT_NAMES,
    SECOND,
    TERMINAL_STATUSES,
    Job,
    OrgSpec,
    Plan,
    Project,
    checkpoint,
    generate,
    generated_checkpoints,
    iso,
    parse_iso,
)

_MUTATION_STEP_US = 60 * SECOND


class Organisation:
    """A generated organisation held in memory, changed by the methods a test calls between syncs."""

    def __init__(self, spec: OrgSpec = OrgSpec()) -> None:
        self.spec = spec
        # Guards the registry and `version`; reentrant so readers can hold it across several reads.
        self.lock = threading.RLock()
        self.version = 0  # moves on every mutation, so cached answers know when they are stale
        self._registry = generate(spec)
        self._added_projects = 0

    # ----------------------------------------------------------------------------------------------
    # reading, as copies

    def project_ids(self) -> list[str]:
        """Return every project id, oldest first."""
        with self.lock:
            return self._project_order()

    def job_ids(self, project_id: str | None = None) -> list[str]:
        """Return the job ids of one project, or of the whole org, oldest first."""
        with self.lock:
            jobs = self._registry.jobs
            ids = list(jobs) if project_id is None else self._get_project(project_id).job_ids
            return self._job_order(ids)

    def project(self, project_id: str) -> dict[str, Any]:
        """Return a project as TrainingProjectV1, with its latest job."""
        with self.lock:
            return copy.deepcopy(self._project_payload(self._get_project(project_id)))

    def job(self, job_id: str) -> dict[str, Any]:
        """Return a job as TrainingJobV1."""
        with self.lock:
            return copy.deepcopy(self._get_job(job_id).data)

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """Return a job's checkpoints as TrainingJobCheckpointV1 dicts, oldest first."""
        with self.lock:
            return copy.deepcopy(self._checkpoint_list(job_id, self._get_job(job_id)))

    def total_checkpoints(self) -> int:
        """Return how many checkpoints the whole org has right now."""
        with self.lock:
            return sum(
                job.plan.count if job.checkpoints is None else len(job.checkpoints)
                for job in self._registry.jobs.values()
            )

    # ----------------------------------------------------------------------------------------------
    # reading, as served: these share the org's objects, so hold `lock` until they are serialised

    def served_projects(self) -> list[dict[str, Any]]:
        """Return every project as TrainingProjectV1, oldest first."""
        projects = self._registry.projects
        return [self._project_payload(projects[pid]) for pid in self._project_order()]

    def served_project(self, project_id: str) -> dict[str, Any] | None:
        """Return one project as TrainingProjectV1, or None if there is no such project."""
        project = self._registry.projects.get(project_id)
        return None if project is None else self._project_payload(project)

    def served_jobs(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """Return the jobs of one project (none for an unknown one), or of the whole org, oldest first."""
        jobs = self._registry.jobs
        if project_id is None:
            ids = list(jobs)
        else:
            project = self._registry.projects.get(project_id)
            ids = [] if project is None else project.job_ids
        return [jobs[jid].data for jid in self._job_order(ids)]

    def served_job(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        """Return a job as TrainingJobV1; a job asked for under another project does not exist."""
        job = self._registry.jobs.get(job_id)
        return None if job is None or job.project_id != project_id else job.data

    def served_checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """Return a job's checkpoints, oldest first."""
        return self._checkpoint_list(job_id, self._get_job(job_id))

    def sample_checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """Return a copy of a job's checkpoints, or one generated checkpoint if it has none."""
        with self.lock:
            job = self._get_job(job_id)
            checkpoints = copy.deepcopy(self._checkpoint_list(job_id, job))
            if not checkpoints:
                rng = random.Random(f"{self.spec.seed}:{job_id}:broken")
                checkpoints = [checkpoint(rng, job_id, job.plan, 0, False, 0.0)]
            return checkpoints

    def _project_order(self) -> list[str]:
        """Return project ids oldest first."""
        projects = self._registry.projects
        return sorted(projects, key=lambda pid: (projects[pid].created_us, pid))

    def _job_order(self, job_ids: list[str]) -> list[str]:
        """Return `job_ids` oldest first."""
        jobs = self._registry.jobs
        return sorted(job_ids, key=lambda jid: (jobs[jid].created_us, jid))

    def _get_project(self, project_id: str) -> Project:
        """Find a project or raise KeyError naming it."""
        try:
            return self._registry.projects[project_id]
        except KeyError:
            raise KeyError(f"no training project {project_id!r}") from None

    def _get_job(self, job_id: str) -> Job:
        """Find a job or raise KeyError naming it."""
        try:
            return self._registry.jobs[job_id]
        except KeyError:
            raise KeyError(f"no training job {job_id!r}") from None

    def _project_payload(self, project: Project) -> dict[str, Any]:
        """Return TrainingProjectV1 sharing internal objects; callers serialise or deep-copy it under the lock."""
        jobs = self._registry.jobs
        latest = max(project.job_ids, key=lambda jid: (jobs[jid].created_us, jid), default=None)
        return {**project.data, "latest_job": None if latest is None else jobs[latest].data}

    def _checkpoint_list(self, job_id: str, job: Job) -> list[dict[str, Any]]:
        """Return the stored list of a mutated job, else a freshly generated one."""
        if job.checkpoints is not None:
            return job.checkpoints
        return generated_checkpoints(self.spec, job_id, job)

    # ----------------------------------------------------------------------------------------------
    # mutations

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
