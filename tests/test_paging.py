"""A page of a listing is never taken for the whole: every paging marker in `archiver.paging.MARKERS`,
row by row, and the spellings a real API sends, each fail their unit (exit 3) and mark nothing deleted.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from archiver import db, paging
from archiver.fake_api import serve
from archiver.normalize import JobListing, ProjectListing, job_listing, project_listing

from .support.commands import run_archiver, sync_env
from .support.databases import scalar
from .test_bad_nights import archive_state, checkpoints_path, nightly, org, served_checkpoints

LISTED = 2


def saying_more(marker: paging.Marker) -> list[tuple[Any, dict[str, Any]]]:
    """Values of a marker's kind that say there is more, with what else its envelope holds."""
    if marker.reading is paging.token:
        return [("abc", {}), (2, {}), (0, {}), ({"href": "/v1/x?page=2"}, {})]
    if marker.reading is paging.flag:
        return [(True, {}), ("true", {})]
    if marker.reading is paging.count:
        return [(LISTED + 1, {}), (str(LISTED + 2), {}), (float(LISTED + 1), {})]
    return [(3, {"page": 1}), ("2", {}), (3, {"currentPage": 2})]


def saying_no_more(marker: paging.Marker) -> list[tuple[Any, dict[str, Any]]]:
    """Values of a marker's kind that say this is all there is."""
    if marker.reading is paging.token:
        return [(None, {}), ("", {}), (False, {}), ({"href": None}, {})]
    if marker.reading is paging.flag:
        return [(False, {}), (None, {}), ("false", {})]
    if marker.reading is paging.count:
        return [(LISTED, {}), (str(LISTED), {}), (1, {}), ("many", {}), (True, {})]
    return [(1, {"page": 1}), ("3", {"page": "3"}), (1, {}), (None, {})]


def placed(place: str, name: str, value: Any, beside: dict[str, Any]) -> dict[str, Any]:
    envelope = {name: value, **beside}
    return envelope if place == paging.TOP else {place: envelope}


@pytest.mark.parametrize("marker", paging.MARKERS, ids=[m.names[0] for m in paging.MARKERS])
def test_each_marker_of_the_table_says_more_in_each_place_and_spelling(marker: paging.Marker) -> None:
    for place in marker.places:
        for name in marker.names:
            for value, beside in saying_more(marker):
                said = paging.markers_of(placed(place, name, value, beside), LISTED)
                path = name if place == paging.TOP else f"{place}.{name}"
                assert any(s.startswith(f"{path}=") for s in said), (place, name, value, said)
            for value, beside in saying_no_more(marker):
                assert paging.markers_of(placed(place, name, value, beside), LISTED) == [], (
                    place,
                    name,
                    value,
                )


@pytest.mark.parametrize(
    ("header", "says_more"),
    [
        ('<https://api.baseten.co/v1/training_projects?page=2>; rel="next"', True),
        ('<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel="next last"', True),
        ("<https://a/x?page=3>; rel=next", True),
        ('<https://a/x?page=1>; rel="prev", <https://a/x?page=1>; rel="first"', False),
        ("", False),
    ],
)
def test_a_link_header_says_more_with_rel_next(header: str, says_more: bool) -> None:
    assert bool(paging.more_than_listed({}, 0, header)) == says_more


# The spellings the issue measured: each took a page for the whole listing.
SPELLINGS: dict[str, tuple[dict[str, Any], str]] = {
    "meta.next_cursor": ({"meta": {"next_cursor": "c2"}}, "meta.next_cursor='c2'"),
    "pagination.has_more": ({"pagination": {"has_more": True}}, "pagination.has_more=True"),
    "nextPageToken": ({"nextPageToken": "t2"}, "nextPageToken='t2'"),
    "links.next": ({"links": {"next": "/v1/x?page=2"}}, "links.next='/v1/x?page=2'"),
    "total": ({"total": 4}, "total=4 for 1 listed"),
    "total_count string": ({"total_count": "4"}, "total_count=4 for 1 listed"),
    "page/total_pages": ({"page": 1, "total_pages": 3}, "total_pages=3 (this is page 1)"),
    "next_page": ({"next_page": 2}, "next_page=2"),
    "next_offset": ({"next_offset": 1}, "next_offset=1"),
    "paging.next_page_token": ({"paging": {"next_page_token": "p2"}}, "paging.next_page_token='p2'"),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_listing_reads_each_spelling_as_incomplete(spelling: str) -> None:
    envelope, said = SPELLINGS[spelling]
    project: dict[str, Any] = {"id": "n4q95w5", "name": "p", "created_at": "2026-01-01T00:00:00Z"}
    project |= {"updated_at": "2026-01-01T00:00:00Z", "latest_job": None}
    listings: list[ProjectListing | JobListing] = [
        project_listing({"training_projects": [project], **envelope}),
        job_listing({"training_project": project, "training_jobs": [], **envelope}, "n4q95w5"),
    ]
    for listing in listings:
        marker = said.split("=")[0] + "="
        assert not listing.complete and marker in str(listing.incomplete)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_checkpoint_page_in_any_spelling_marks_nothing_deleted(archive: Engine, spelling: str) -> None:
    fake = org()
    job = next(j for j in fake.job_ids() if len(fake.checkpoints(j)) == 3)
    assert nightly(archive, fake, 0).exit_code == 0
    envelope, said = SPELLINGS[spelling]
    body = served_checkpoints(fake, job)
    fake.override(
        "GET", checkpoints_path(fake, job), body={**body, "checkpoints": body["checkpoints"][:1], **envelope}
    )
    report = nightly(archive, fake, 1, full=True)
    assert report.exit_code == 3
    (failure,) = report.failures
    assert failure.job_id == job and f"says there is more ({said})" in failure.message
    live = "SELECT COUNT(*) FROM checkpoints WHERE training_job_id = :j AND deleted_at IS NULL"
    assert scalar(archive, live, j=job) == 3
    assert scalar(archive, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NOT NULL") == 0


def test_a_project_and_a_job_listing_paged_in_other_spellings_mark_nothing_deleted(archive: Engine) -> None:
    fake = org()
    assert nightly(archive, fake, 0).exit_code == 0
    before = archive_state(archive)
    projects = [fake.project(p) for p in fake.project_ids()]
    fake.override(
        "GET", "/v1/training_projects", body={"training_projects": projects[:1], "meta": {"totalCount": "2"}}
    )
    project = projects[0]["id"]
    jobs = [fake.job(j) for j in fake.job_ids(project)]
    listing = {"training_project": projects[0], "training_jobs": jobs[:1], "pagination": {"hasMore": True}}
    fake.override("GET", f"/v1/training_projects/{project}/jobs", body=listing)
    report = nightly(archive, fake, 1)
    assert report.exit_code == 3
    messages = {f.project_id: f.message for f in report.failures}
    assert set(messages) == {None, project}
    assert "meta.totalCount=2 for 1 listed" in messages[None]
    assert "pagination.hasMore=True" in messages[project]
    assert archive_state(archive) == before


def test_the_archiver_command_reads_a_link_header_as_a_page(database_url: str) -> None:
    fake = org()
    with serve(fake) as url:
        env = sync_env(url, database_url)
        assert run_archiver("sync", env=env).exit_code == 0
        job = next(j for j in fake.job_ids() if len(fake.checkpoints(j)) == 3)
        body = served_checkpoints(fake, job)
        link = {"Link": f'<{url}{checkpoints_path(fake, job)}?page=2>; rel="next"'}
        fake.override(
            "GET",
            checkpoints_path(fake, job),
            body={**body, "checkpoints": body["checkpoints"][:1]},
            headers=link,
        )
        result = run_archiver("sync", "--full", env=env)
    assert result.exit_code == 3, result.output
    assert "says there is more (Link: <" in result.output and 'rel="next")' in result.output
    engine = db.make_engine(database_url)
    try:
        assert scalar(engine, "SELECT COUNT(*) FROM checkpoints WHERE deleted_at IS NOT NULL") == 0
        live = "SELECT COUNT(*) FROM checkpoints WHERE training_job_id = :j AND deleted_at IS NULL"
        assert scalar(engine, live, j=job) == 3
    finally:
        engine.dispose()
