"""The fake API serves any era of the published spec, so a spec change can be shown and tested."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from archiver.fake_api import FakeBaseten, OrgSpec
from archiver.sync import SyncOptions

from .support import fakes
from .support.databases import rows
from .support.schemas import ERAS

SPEC = OrgSpec(seed=3, projects=2, jobs_per_project=3, checkpoints_per_job=2)


@pytest.mark.parametrize("era", sorted(ERAS))
def test_each_era_serves_jobs_with_that_eras_fields(era: str) -> None:
    fake = FakeBaseten(OrgSpec(seed=3, projects=2, jobs_per_project=3, spec_era=era))
    expected = set(ERAS[era]["TrainingJobV1"]["properties"])
    assert {frozenset(fake.job(job_id)) for job_id in fake.job_ids()} == {frozenset(expected)}


def test_the_default_era_is_the_latest() -> None:
    assert OrgSpec().spec_era == "D"
    with pytest.raises(ValueError, match="unknown spec era 'E'"):
        OrgSpec(spec_era="E")


def test_a_spec_change_reaches_the_archive_as_versions(archive: Engine) -> None:
    """Era C sends no node_count; when the server moves to era D every job gains one, as a new version."""
    older = FakeBaseten(OrgSpec(seed=3, projects=2, jobs_per_project=3, checkpoints_per_job=2, spec_era="C"))
    assert fakes.sync(archive, older).exit_code == 0
    assert rows(archive, "SELECT DISTINCT node_count_source FROM job_facts") == [("default",)]
    newer = FakeBaseten(OrgSpec(seed=3, projects=2, jobs_per_project=3, checkpoints_per_job=2, spec_era="D"))
    assert fakes.sync(archive, newer, SyncOptions(full=True)).exit_code == 0
    jobs = len(newer.job_ids())
    assert rows(archive, "SELECT COUNT(*) FROM training_jobs WHERE node_count IS NOT NULL") == [(jobs,)]
    assert rows(archive, "SELECT DISTINCT node_count_source FROM job_facts") == [("node_count",)]
    # The era-C state of each job is a version of its own, with no node_count.
    assert rows(archive, "SELECT COUNT(*) FROM training_job_history WHERE node_count IS NULL") == [(jobs,)]
