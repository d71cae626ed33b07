"""The training management API's endpoints, answered from an `Organisation`, and the fake's own.

`POST /__fake__/advance` (not Baseten's) lets a night pass (see `nights`) and answers
`{"night": N, "changes": "..."}`; like every request, it needs the key.

Checkpoint listings, the bulk of every sync, are cached as encoded bodies in a bounded LRU that
any mutation of the organisation empties.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from archiver.fake_api import nights
from archiver.fake_api.org import Organisation
from archiver.fake_api.responses import HTML, HTML_ERROR, Response, message

_CACHE_MAX_BYTES = 32 * 1024 * 1024


class Router:
    """Dispatch requests to the endpoints; jobs in `broken_jobs` always answer a broken checkpoint listing."""

    def __init__(self, org: Organisation, broken_jobs: Mapping[str, str]) -> None:
        self._org = org
        self._broken_jobs = broken_jobs
        # Guarded by the organisation's lock, like the state the bodies were made from.
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_version = org.version

    def route(self, method: str, path: str, body: bytes) -> Response:
        """Dispatch a request to the endpoint its path names."""
        parts = [part for part in urlsplit(path).path.split("/") if part]
        action: Callable[[], Response]
        match parts:
            case ["v1", "training_projects"]:
                allowed, action = "GET", self._list_projects
            case ["v1", "training_projects", pid]:
                allowed, action = "GET", partial(self._show_project, pid)
            case ["v1", "training_projects", pid, "jobs"]:
                allowed, action = "GET", partial(self._list_jobs, pid)
            case ["v1", "training_projects", pid, "jobs", jid]:
                allowed, action = "GET", partial(self._show_job, pid, jid)
            case ["v1", "training_projects", pid, "jobs", jid, "checkpoints"]:
                allowed, action = "GET", partial(self._list_checkpoints, pid, jid)
            case ["v1", "training_jobs", "search"]:
                allowed, action = "POST", partial(self._search, body)
            case ["__fake__", "advance"]:
                allowed, action = "POST", self._advance
            case _:
                return message(404, f"No route for {urlsplit(path).path}")
        if method != allowed:
            return Response.of(405, {"message": f"Method {method} not allowed"}, headers={"Allow": allowed})
        return action()

    def _advance(self) -> Response:
        """Answer POST /__fake__/advance (the fake's own): let a night pass, and say what it changed."""
        night = nights.advance(self._org)
        return Response.of(200, {"night": night.number, "changes": str(night)})

    def _list_projects(self) -> Response:
        """Answer GET /v1/training_projects."""
        with self._org.lock:
            return Response.of(200, {"training_projects": self._org.served_projects()})

    def _show_project(self, project_id: str) -> Response:
        """Answer GET /v1/training_projects/{pid}."""
        with self._org.lock:
            project = self._org.served_project(project_id)
            if project is None:
                return _no_project(project_id)
            return Response.of(200, {"training_project": project})

    def _list_jobs(self, project_id: str) -> Response:
        """Answer GET /v1/training_projects/{pid}/jobs."""
        with self._org.lock:
            project = self._org.served_project(project_id)
            if project is None:
                return _no_project(project_id)
            jobs = self._org.served_jobs(project_id)
            return Response.of(200, {"training_project": project, "training_jobs": jobs})

    def _show_job(self, project_id: str, job_id: str) -> Response:
        """Answer GET /v1/training_projects/{pid}/jobs/{jid}."""
        with self._org.lock:
            project = self._org.served_project(project_id)
            if project is None:
                return _no_project(project_id)
            job = self._org.served_job(project_id, job_id)
            if job is None:
                return _no_job(job_id)
            return Response.of(200, {"training_project": project, "training_job": job})

    def _list_checkpoints(self, project_id: str, job_id: str) -> Response:
        """Answer GET /v1/training_projects/{pid}/jobs/{jid}/checkpoints, from the cache when possible."""
        with self._org.lock:
            if self._org.served_project(project_id) is None:
                return _no_project(project_id)
            job = self._org.served_job(project_id, job_id)
            if job is None:
                return _no_job(job_id)
            broken = self._broken_jobs.get(job_id)
            if broken is not None:
                return self._broken_checkpoints(job_id, job, broken)
            if self._cache_version != self._org.version:
                self._cache.clear()
                self._cache_bytes, self._cache_version = 0, self._org.version
            cache_key = f"{project_id}/{job_id}"
            if (cached := self._cache.get(cache_key)) is not None:
                self._cache.move_to_end(cache_key)
                return Response.of(200, cached)
            payload = {"training_job": job, "checkpoints": self._org.served_checkpoints(job_id)}
            response = Response.of(200, payload)
            self._remember(cache_key, response.body)
            return response

    def _remember(self, key: str, body: bytes) -> None:
        """Keep a response body in the bounded LRU cache."""
        self._cache[key] = body
        self._cache_bytes += len(body)
        while self._cache_bytes > _CACHE_MAX_BYTES:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= len(evicted)

    def _broken_checkpoints(self, job_id: str, job: dict[str, Any], kind: str) -> Response:
        """Answer 200 with a checkpoints body that is broken in the named way."""
        if kind == "not-json":
            return Response.of(200, HTML_ERROR % (200, 502, b"Bad Gateway"), content_type=HTML)
        checkpoints = self._org.sample_checkpoints(job_id)  # a broken field needs a checkpoint to live in
        job = copy.deepcopy(job)
        payload: dict[str, Any] = {"training_job": job, "checkpoints": checkpoints}
        if kind == "missing-field":
            del checkpoints[0]["checkpoint_id"]
        elif kind == "wrong-type":
            checkpoints[0]["size_bytes"] = "big"
        elif kind == "list-for-object":
            payload["training_job"] = [job]
        body = Response.of(200, payload).body
        if kind == "truncated":
            body = body[: len(body) // 2]
        return Response.of(200, body)

    def _search(self, body: bytes) -> Response:
        """Answer POST /v1/training_jobs/search."""
        try:
            query = json.loads(body) if body.strip() else {}
        except ValueError:
            return message(400, "Request body is not valid JSON")
        if not isinstance(query, dict):
            return message(400, "Request body must be a JSON object")
        statuses = query.get("statuses")
        if statuses is not None and not (
            isinstance(statuses, list) and all(isinstance(s, str) for s in statuses)
        ):
            return message(400, "statuses must be a list of strings")
        descending = _descending(query.get("order_by"))
        if descending is None:
            return message(400, "order_by supports only created_at, with order asc or desc")
        project_id, job_id = query.get("project_id"), query.get("job_id")
        with self._org.lock:
            jobs = [
                job
                for job in self._org.served_jobs()
                if (project_id is None or job["training_project_id"] == project_id)
                and (job_id is None or job["id"] == job_id)
                and (statuses is None or job["current_status"] in statuses)
            ]
            return Response.of(200, {"training_jobs": jobs[::-1] if descending else jobs})


def _no_project(project_id: str) -> Response:
    return message(404, f"Training project {project_id} not found")


def _no_job(job_id: str) -> Response:
    return message(404, f"Training job {job_id} not found")


def _descending(order_by: Any) -> bool | None:
    """Read the search sort direction; None means the order_by value is unsupported."""
    if order_by is None or order_by == []:
        return True
    if not isinstance(order_by, list) or not all(isinstance(o, dict) for o in order_by):
        return None
    first = order_by[0]
    order = first.get("order", "desc")
    if first.get("field", "created_at") != "created_at" or order not in ("asc", "desc"):
        return None
    return bool(order == "desc")
