"""What the fake organisation holds now, and how the API serves it: reads as copies, or as served.

Reads return deep copies; the served reads share the org's objects, so their callers hold `lock`
until they are serialised. How the organisation changes between nights is `archiver.fake_api.org`.
"""

from __future__ import annotations

import copy
import random
import threading
from typing import Any

from archiver.fake_api.generate import (
    Job,
    OrgSpec,
    Project,
    checkpoint,
    generate,
    generated_checkpoints,
)


class Holdings:
    """A generated organisation held in memory, as the API serves it; `Organisation` adds the changes."""

    def __init__(self, spec: OrgSpec = OrgSpec()) -> None:
        self.spec = spec
        # Guards the registry and `version`; reentrant so readers can hold it across several reads.
        self.lock = threading.RLock()
        self.version = 0  # moves on every mutation, so cached answers know when they are stale
        self._registry = generate(spec)
        self._added_projects = 0
        self._started_jobs = 0
        self.night = 0  # how many nights have passed since the org was generated (see `nights`)
        self.fixed: set[str] = (
            set()
        )  # ids placed as given (`place_project`, `place_job`): nights leave them be

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
