"""API JSON to rows: strict on what the archive needs, lenient on what the API leaves loose."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from archiver import normalize
from archiver.errors import MalformedResponse
from archiver.normalize import (
    CONTRACT,
    CheckpointListing,
    Where,
    job_listing,
    lora_config_row,
    parse_timestamp,
    project_listing,
    project_of_job,
)
from archiver.schema import metadata

from .support.payloads import CHECKPOINTS, JOB, LORA, PROJECT, payload
from .support.schemas import ERAS, SCHEMAS


def checkpoint_listing(body: Any, project_id: str, job_id: str) -> CheckpointListing:
    """A checkpoint listing, raising the error its first quarantined entry fails with (the job's failure
    names it, field and all); quarantine itself is tested below with `normalize.checkpoint_listing`."""
    listing = normalize.checkpoint_listing(body, project_id, job_id)
    if listing.rejected:
        raise listing.rejected[0].error
    return listing


def test_sample_response_becomes_rows() -> None:
    page = checkpoint_listing(payload(), "n4q95w5", "p7qr9qv")
    job = page.job.row
    assert job["training_project_id"] == "n4q95w5"
    assert job["instance_type_id"] == "H100:8x208x1800"
    assert job["user_email"] == "alice@example.com"
    assert job["availability_model"] == "DEDICATED"  # as sent
    assert job["node_count"] == 2 and job["extra"] is None
    assert job["updated_at"] == datetime(2026, 5, 14, 13, 2, 51, tzinfo=UTC)
    assert page.job.instance_type == {**JOB["instance_type"], "extra": None, "nodes": None}
    lora, full = page.checkpoints
    assert lora["size_bytes"] == 174391296 and full["size_bytes"] == 16388044800
    assert lora["lora_config_sha256"] in page.lora_configs
    assert full["lora_config_sha256"] is None and full["base_model"] is None
    assert full["extra"] == {"storage_region": "us-east-1"}
    assert not page.all_complete


def test_missing_optional_keys_are_null() -> None:
    body = payload()
    for checkpoint in body["checkpoints"]:
        del checkpoint["sync_status"], checkpoint["lora_adapter_config"], checkpoint["base_model"]
    for key in ("name", "error_message", "checkpoint_sync_status", "priority", "user", "availability_model"):
        del body["training_job"][key]
    page = checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    assert [c["sync_status"] for c in page.checkpoints] == [None, None]
    assert page.lora_configs == {}
    assert page.job.row["user_email"] is None and page.job.row["priority"] is None


def test_unknown_values_are_stored_as_received() -> None:
    body = payload()
    body["training_job"]["current_status"] = "TRAINING_JOB_HIBERNATING"
    body["checkpoints"][0]["checkpoint_type"] = "qlora-4bit"
    body["checkpoints"][1]["checkpoint_type"] = "FULL"
    page = checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    assert page.job.row["current_status"] == "TRAINING_JOB_HIBERNATING"
    assert [c["checkpoint_type"] for c in page.checkpoints] == ["qlora-4bit", "full"]


@pytest.mark.parametrize(
    ("breakage", "field"),
    [
        (lambda b: b["checkpoints"][1].pop("checkpoint_id"), "checkpoints[1].checkpoint_id"),
        (lambda b: b["checkpoints"][0].update(size_bytes="big"), "checkpoints[0].size_bytes"),
        (lambda b: b["checkpoints"][0].update(size_bytes=2**64), "checkpoints[0].size_bytes"),
        (lambda b: b["checkpoints"][0].update(created_at="yesterday"), "checkpoints[0].created_at"),
        (lambda b: b.update(training_job=[1, 2]), "training_job"),
        (lambda b: b.pop("checkpoints"), "checkpoints"),
        (lambda b: b.update(checkpoints={"a": 1}), "checkpoints"),
        (lambda b: b["training_job"].pop("current_status"), "training_job.current_status"),
    ],
)
def test_broken_responses_name_project_job_and_field(breakage: Any, field: str) -> None:
    body = payload()
    breakage(body)
    with pytest.raises(MalformedResponse) as raised:
        checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    message = str(raised.value)
    assert "project n4q95w5" in message and "job p7qr9qv" in message and repr(field) in message


def test_duplicate_checkpoint_ids_keep_the_last_entry() -> None:
    body = payload()
    later = {**CHECKPOINTS[0], "size_bytes": 999, "sync_status": "COMPLETE"}
    body["checkpoints"].append(later)
    page = checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    assert [c["checkpoint_id"] for c in page.checkpoints] == ["checkpoint-1000", "checkpoint-500"]
    assert page.checkpoints[-1]["size_bytes"] == 999
    assert page.duplicates == ["checkpoint-500"]


def test_lora_config_identity_ignores_key_order() -> None:
    reordered = dict(reversed(list(LORA.items())))
    assert lora_config_row(LORA)["config_sha256"] == lora_config_row(reordered)["config_sha256"]
    assert lora_config_row(LORA)["config_sha256"] != lora_config_row({**LORA, "r": 8})["config_sha256"]
    odd = lora_config_row({"r": "sixteen", "lora_alpha": True, "target_modules": ".*proj"})
    assert odd["r"] is None and odd["lora_alpha"] is None and odd["target_modules"] == ".*proj"
    assert odd["config"]["r"] == "sixteen"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-14T12:00:00Z", datetime(2026, 5, 14, 12, tzinfo=UTC)),
        ("2026-05-14T12:00:00", datetime(2026, 5, 14, 12, tzinfo=UTC)),
        ("2026-05-14T14:00:00+02:00", datetime(2026, 5, 14, 12, tzinfo=UTC)),
        ("2026-05-14T12:00:00.123456789Z", datetime(2026, 5, 14, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-05-14T12:00:00.5-01:30", datetime(2026, 5, 14, 13, 30, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamps_become_utc(text: str, expected: datetime) -> None:
    assert parse_timestamp(text, Where()) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-14t12:00:00z", datetime(2026, 5, 14, 12, tzinfo=UTC)),  # RFC 3339 allows lowercase
        ("2026-05-14T12:00:00,25Z", datetime(2026, 5, 14, 12, 0, 0, 250000, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999+00:00", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_rfc3339_spellings_and_the_edges_of_the_calendar(text: str, expected: datetime) -> None:
    assert parse_timestamp(text, Where()) == expected


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "2026-02-30T00:00:00Z"]
)
def test_instants_outside_the_storable_range_are_malformed_not_a_crash(text: str) -> None:
    with pytest.raises(MalformedResponse, match="years 1-9999"):
        parse_timestamp(text, Where("n4q95w5", "p7qr9qv", "created_at"))


@pytest.mark.parametrize(
    ("breakage", "field", "problem"),
    [
        (lambda b: b["training_job"].update(name="a\x00b"), "training_job.name", "NUL"),
        (
            lambda b: b["checkpoints"][0].update(checkpoint_id="\ud800"),
            "checkpoints[0].checkpoint_id",
            "surrogate",
        ),
        (
            lambda b: b["checkpoints"][1].update(note={"k": ["ok", "x\x00"]}),
            "checkpoints[1].note.k[1]",
            "NUL",
        ),
        (lambda b: b["checkpoints"][1].update(ratio=float("nan")), "checkpoints[1]", "NaN"),
        (
            lambda b: b["checkpoints"][0]["lora_adapter_config"].update(r=float("inf")),
            "lora_adapter_config",
            "NaN",
        ),
        (lambda b: b["training_job"]["instance_type"].update(gpu_count=2**31), "gpu_count", "32 bits"),
        (lambda b: b["training_job"].update(training_project_id="other77"), "training_project_id", "other77"),
    ],
)
def test_values_no_database_can_hold_fail_the_job_by_name(breakage: Any, field: str, problem: str) -> None:
    body = payload()
    breakage(body)
    with pytest.raises(MalformedResponse) as raised:
        checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    message = str(raised.value)
    assert "project n4q95w5" in message and "job p7qr9qv" in message
    assert field in message and problem in message
    assert "\x00" not in message and "\ud800" not in message


def test_lora_configs_equal_in_python_but_not_in_json_stay_apart() -> None:
    """A listing's configs are serialized once per distinct document: `1`, `1.0` and `true`, or
    `0.0` and `-0.0`, are equal in Python and must still be told apart, each kept as sent."""
    variants = [
        {**LORA, "r": 16},
        {**LORA, "r": 16.0},
        {**LORA, "r": True},
        {**LORA, "lora_dropout": 0.0},
        {**LORA, "lora_dropout": -0.0},
        {**LORA, "target_modules": ["q_proj", 1]},
        {**LORA, "target_modules": ["q_proj", True]},
        {**LORA, "target_modules": ["q_proj, 1"]},  # one string that reads like the two values above
        {**LORA, "task_type": "CAUSAL_LM', 'r': 16"},  # quotes in a value: still one value
        {**LORA, "target_modules": ["q_proj", 1]},  # the sixth again: the same config
    ]
    body = payload()
    body["checkpoints"] = [
        {**CHECKPOINTS[0], "checkpoint_id": f"checkpoint-{index}", "lora_adapter_config": variant}
        for index, variant in enumerate(variants)
    ]
    page = checkpoint_listing(copy.deepcopy(body), "n4q95w5", "p7qr9qv")
    shas = [row["lora_config_sha256"] for row in page.checkpoints]
    assert len(set(shas)) == len(variants) - 1 and shas[-1] == shas[5]
    for sha, variant in zip(shas, variants, strict=True):
        config = page.lora_configs[sha]["config"]
        assert json.dumps(config) == json.dumps(variant)
    assert page.lora_configs[shas[0]]["r"] == 16 and page.lora_configs[shas[2]]["r"] is None
    # Read again, the same documents give the same rows.
    again = checkpoint_listing(copy.deepcopy(body), "n4q95w5", "p7qr9qv")
    assert [row["lora_config_sha256"] for row in again.checkpoints] == shas


def test_the_lora_configs_remembered_are_few_and_small() -> None:
    """Configs are remembered to be read once (`contract._lora_config`), but a server sending large or
    ever new ones must not make the process hold on to them: at most 1,024, none over 4 KiB."""
    from archiver import contract

    body = payload()
    large = [{**LORA, "notes": f"{index} " + "x" * 5_000} for index in range(3)]
    many = [{**LORA, "r": index} for index in range(1_100)]
    body["checkpoints"] = [
        {**CHECKPOINTS[0], "checkpoint_id": f"checkpoint-{index}", "lora_adapter_config": config}
        for index, config in enumerate(many + large)
    ]
    page = checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    assert len(page.lora_configs) == len(large) + len(many)  # each read, remembered or not
    assert 0 < len(contract._LORA_ROWS) <= 1_024
    assert all(len(json.dumps(row["config"])) <= 4_096 for row in contract._LORA_ROWS.values())
    assert not any("notes" in row["config"] for row in contract._LORA_ROWS.values())


def test_a_bad_lora_config_is_refused_at_every_entry_that_carries_it() -> None:
    body = payload()
    bad = {**LORA, "lora_alpha": float("nan")}
    body["checkpoints"] = [
        {**CHECKPOINTS[0], "checkpoint_id": f"checkpoint-{index}", "lora_adapter_config": dict(bad)}
        for index in range(3)
    ]
    listing = normalize.checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    assert listing.checkpoints == []
    assert [str(rejected.error).count("checkpoints[") for rejected in listing.rejected] == [1, 1, 1]
    assert all(f"checkpoints[{i}]" in str(r.error) for i, r in enumerate(listing.rejected))


def test_huge_numbers_in_a_lora_config_stay_exact_in_the_document() -> None:
    row = lora_config_row({"r": 2**70, "lora_alpha": 10**400, "lora_dropout": 2**60 + 1})
    assert row["r"] is None and row["lora_alpha"] is None and row["lora_dropout"] == float(2**60)
    assert row["config"] == {"r": 2**70, "lora_alpha": 10**400, "lora_dropout": 2**60 + 1}


def test_a_project_listing_keeps_good_entries_and_rejects_broken_ones_by_name() -> None:
    broken = {**PROJECT, "id": "w2m81xk", "created_at": "yesterday"}
    later = {**PROJECT, "name": "renamed"}
    listing = project_listing({"training_projects": [PROJECT, broken, later]})
    assert [(p["id"], p["name"]) for p in listing.projects] == [("n4q95w5", "renamed")]
    (rejected,) = listing.rejected
    assert "training_projects[1].created_at" in str(rejected.error) and rejected.entry_id == "w2m81xk"
    # Quarantined by id: the listing still speaks for it, so it is complete, and w2m81xk is not gone.
    assert listing.complete and listing.refused == {"w2m81xk"}
    assert project_listing({"training_projects": [PROJECT]}).complete


@pytest.mark.parametrize(
    "body", [[], {"projects": []}, {"training_projects": {"n4q95w5": PROJECT}}, {"training_projects": None}]
)
def test_a_project_listing_without_its_list_is_malformed(body: Any) -> None:
    with pytest.raises(MalformedResponse, match="training_projects"):
        project_listing(body)


def test_a_job_listing_normalizes_the_project_and_each_job_once() -> None:
    later = {**copy.deepcopy(JOB), "current_status": "TRAINING_JOB_FAILED"}
    broken = {**copy.deepcopy(JOB), "id": "prwny3y", "updated_at": "yesterday"}
    listing = job_listing({"training_project": PROJECT, "training_jobs": [JOB, broken, later]}, "n4q95w5")
    assert listing.project["name"] == "qwen3-8b-support-sft"
    assert [(j.row["id"], j.row["current_status"]) for j in listing.jobs] == [
        ("p7qr9qv", "TRAINING_JOB_FAILED")
    ]
    (rejected,) = listing.rejected
    assert (rejected.error.project_id, rejected.error.job_id) == ("n4q95w5", "prwny3y")
    # Quarantined alone: its id is spoken for, so the listing still says which other jobs are gone.
    assert rejected.entry_id == "prwny3y" and listing.refused == {"prwny3y"} and listing.complete


def test_a_job_listing_of_another_project_is_malformed() -> None:
    other = {**PROJECT, "id": "w2m81xk"}
    with pytest.raises(MalformedResponse, match=r"expected project 'n4q95w5', got 'w2m81xk'"):
        job_listing({"training_project": other, "training_jobs": []}, "n4q95w5")
    elsewhere = {**copy.deepcopy(JOB), "training_project_id": "w2m81xk"}
    listing = job_listing({"training_project": PROJECT, "training_jobs": [elsewhere]}, "n4q95w5")
    assert listing.jobs == [] and "expected project 'n4q95w5'" in str(listing.rejected[0].error)


def test_the_job_search_names_the_project_of_exactly_that_job() -> None:
    other = {**copy.deepcopy(JOB), "id": "p7qr9qvx", "training_project_id": "w2m81xk"}
    assert project_of_job({"training_jobs": [other, JOB]}, "p7qr9qv").project_id == "n4q95w5"
    assert project_of_job({"training_jobs": [other]}, "p7qr9qv").project_id is None
    broken = project_of_job({"training_jobs": [{"id": "p7qr9qv"}]}, "p7qr9qv")
    assert broken.project_id is None and [r.entry_id for r in broken.rejected] == ["p7qr9qv"]
    # Another job's broken entry is quarantined and the search goes on.
    found = project_of_job({"training_jobs": [{"id": "zzz"}, JOB]}, "p7qr9qv")
    assert found.project_id == "n4q95w5" and [r.entry_id for r in found.rejected] == ["zzz"]


# ------------------------------------------------------------------------------------------------
# the contract: what the API promises, held against its OpenAPI schemas

# Where the archiver departs from the spec on purpose; normalize says why at each key.
DEPARTURES = {
    ("TrainingJobCheckpointV1", "base_model", "optional"),
    ("TrainingJobCheckpointV1", "lora_adapter_config", "optional"),
    ("TrainingJobCheckpointV1", "training_job_id", "optional"),
    ("TrainingJobCheckpointV1", "target", "not in the spec"),
    ("TrainingJobV1", "priority", "nullable"),
    ("TrainingJobV1", "node_count", "nullable"),
    ("TrainingJobV1", "availability_model", "nullable"),
}
# The response envelopes: read by the listing parsers, not contracts of their own.
ENVELOPES = {
    "GetTrainingJobCheckpointsResponseV1",
    "ListTrainingProjectsResponseV1",
    "ListTrainingJobsResponseV1",
    "SearchTrainingJobsResponseV1",
}


def nullable(schema: dict[str, Any]) -> bool:
    return any(option.get("type") == "null" for option in schema.get("anyOf", []))


def test_the_contract_matches_the_openapi_schemas() -> None:
    objects = {name for name, schema in SCHEMAS.items() if "properties" in schema}
    assert {contract.schema for contract in CONTRACT} == objects - ENVELOPES
    departures = set()
    for contract in CONTRACT:
        properties = SCHEMAS[contract.schema]["properties"]
        required = set(SCHEMAS[contract.schema].get("required", []))
        assert set(properties) <= contract.known, contract.schema
        for key in contract.keys:
            if key.name not in properties:
                departures.add((contract.schema, key.name, "not in the spec"))
                continue
            if key.required != (key.name in required):
                departures.add((contract.schema, key.name, "required" if key.required else "optional"))
            if key.nullable != nullable(properties[key.name]):
                departures.add((contract.schema, key.name, "nullable" if key.nullable else "not nullable"))
    assert departures == DEPARTURES


PATHS = {
    "TrainingProjectV1": "training_project",
    "TrainingJobV1": "training_job",
    "InstanceTypeV1": "training_job.instance_type",
    "TrainingProjectSummaryV1": "training_job.training_project",
    "UserV1": "training_job.user",
    "TrainingJobCheckpointV1": "checkpoints[0]",
}


def sample(schema: str) -> tuple[dict[str, Any], dict[str, Any], Callable[[dict[str, Any]], Any]]:
    """A response holding a `schema` object, that object, and the call that normalizes the response."""
    if schema == "TrainingProjectV1":
        listing: dict[str, Any] = {"training_project": copy.deepcopy(PROJECT), "training_jobs": []}
        return listing, listing["training_project"], lambda b: job_listing(b, "n4q95w5")
    body = payload()
    job = body["training_job"]
    target = {
        "TrainingJobV1": job,
        "InstanceTypeV1": job["instance_type"],
        "TrainingProjectSummaryV1": job["training_project"],
        "UserV1": job["user"],
        "TrainingJobCheckpointV1": body["checkpoints"][0],
    }[schema]
    return body, target, lambda b: checkpoint_listing(b, "n4q95w5", "p7qr9qv")


def promised(kind: str) -> list[tuple[str, str]]:
    """(schema, key) of every key the spec requires (`missing`) or forbids to be null (`null`)."""
    lenient = {(schema, key) for schema, key, how in DEPARTURES if how in ("optional", "nullable")}
    return [
        (name, key)
        for name in PATHS
        for key, prop in SCHEMAS[name]["properties"].items()
        if key in SCHEMAS[name].get("required", [])
        and (kind == "missing" or not nullable(prop))
        and (name, key) not in lenient
    ]


@pytest.mark.parametrize(("schema", "key"), promised("missing"))
def test_a_missing_required_field_fails_by_name(schema: str, key: str) -> None:
    body, target, normalize = sample(schema)
    del target[key]
    with pytest.raises(MalformedResponse, match=re.escape(f"field '{PATHS[schema]}.{key}': required")):
        normalize(body)


@pytest.mark.parametrize(("schema", "key"), promised("null"))
def test_a_null_in_a_non_nullable_field_fails_by_name(schema: str, key: str) -> None:
    body, target, normalize = sample(schema)
    target[key] = None
    with pytest.raises(
        MalformedResponse, match=re.escape(f"field '{PATHS[schema]}.{key}': must not be null")
    ):
        normalize(body)


@pytest.mark.parametrize(
    ("schema", "key", "absent"),
    [
        (contract.schema, key.name, absent)
        for contract in CONTRACT
        for key in contract.keys
        for absent in (["missing"] if not key.required else []) + (["null"] if key.nullable else [])
    ],
)
def test_what_the_contract_lets_be_absent_or_null_may_be(schema: str, key: str, absent: str) -> None:
    body, target, normalize = sample(schema)
    if absent == "missing":
        target.pop(key, None)
    else:
        target[key] = None
    normalize(body)


def test_the_lenient_keys_read_as_null() -> None:
    body = payload()
    body["training_job"] |= {"priority": None, "availability_model": None}
    for checkpoint in body["checkpoints"]:
        del checkpoint["base_model"], checkpoint["lora_adapter_config"]
    page = checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    assert page.job.row["priority"] is None and page.job.row["availability_model"] is None
    assert [(c["base_model"], c["lora_config_sha256"]) for c in page.checkpoints] == [(None, None)] * 2


@pytest.mark.parametrize(
    ("key", "absent"),
    [(key, "missing") for schema, key in promised("missing") if schema == "TrainingProjectV1"]
    + [(key, "null") for schema, key in promised("null") if schema == "TrainingProjectV1"],
)
def test_a_project_listing_rejects_an_entry_that_breaks_a_promise_and_keeps_the_rest(
    key: str, absent: str
) -> None:
    broken = {**PROJECT, "id": "w2m81xk"}
    if absent == "missing":
        del broken[key]
    else:
        broken[key] = None
    listing = project_listing({"training_projects": [PROJECT, broken]})
    assert [p["id"] for p in listing.projects] == ["n4q95w5"]
    # Without a readable id the listing cannot say which project the entry is: nothing is taken as gone.
    assert (listing.refused, listing.complete) == ((set(), False) if key == "id" else ({"w2m81xk"}, True))
    (rejected,) = listing.rejected
    assert f"field 'training_projects[1].{key}'" in str(rejected.error)


# ------------------------------------------------------------------------------------------------
# exact integers


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("9007199254740993", 2**53 + 1),  # a JSON integer is exact at any size that fits
        ("1.0e10", 10_000_000_000),
        ("16.0", 16),
        ("-9007199254740991.0", -(2**53) + 1),
        (str(2**63 - 1), 2**63 - 1),
        (str(-(2**63)), -(2**63)),
    ],
)
def test_exact_integers_are_stored(sent: str, stored: int) -> None:
    body = payload()
    body["checkpoints"][0]["size_bytes"] = json.loads(sent)
    value = checkpoint_listing(body, "n4q95w5", "p7qr9qv").checkpoints[0]["size_bytes"]
    assert value == stored and type(value) is int


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        ("9007199254740993.0", "not an exact integer: floats beyond 2^53 lose digits"),
        ("9007199254740992.0", "not an exact integer: floats beyond 2^53 lose digits"),
        ("-1e300", "not an exact integer: floats beyond 2^53 lose digits"),
        ("1.5", "expected an integer, got float 1.5"),
        ("true", "expected an integer, got bool True"),
        ('"12"', "expected an integer, got str '12'"),
        (str(2**63), "does not fit in 64 bits"),
        (str(-(2**63) - 1), "does not fit in 64 bits"),
    ],
)
def test_inexact_integers_fail_by_name_saying_why(sent: str, problem: str) -> None:
    body = payload()
    body["checkpoints"][0]["size_bytes"] = json.loads(sent)
    with pytest.raises(MalformedResponse) as raised:
        checkpoint_listing(body, "n4q95w5", "p7qr9qv")
    assert "field 'checkpoints[0].size_bytes'" in str(raised.value) and problem in str(raised.value)


@pytest.mark.parametrize(("sent", "stored"), [("8.0", 8), (str(2**31 - 1), 2**31 - 1)])
def test_a_32_bit_column_takes_exact_integers_that_fit(sent: str, stored: int) -> None:
    body = payload()
    body["training_job"]["instance_type"]["gpu_count"] = json.loads(sent)
    assert checkpoint_listing(body, "n4q95w5", "p7qr9qv").job.instance_type == {
        **JOB["instance_type"],
        "gpu_count": stored,
        "extra": None,
        "nodes": None,
    }


@pytest.mark.parametrize(
    ("sent", "column"),
    [
        ("16", 16),
        ("16.0", 16),
        ("1.0e3", 1000),
        (str(2**63 - 1), 2**63 - 1),
        ("9007199254740993.0", None),
        ("1.5", None),
        ("true", None),
        ('"16"', None),
        (str(2**63), None),
    ],
)
def test_the_lora_rank_column_is_exact_and_the_document_as_received(sent: str, column: int | None) -> None:
    received = json.loads(sent)
    row = lora_config_row({**LORA, "r": received})
    assert row["r"] == column and type(row["r"]) is type(column)
    assert row["config"]["r"] == received and type(row["config"]["r"]) is type(received)


# ------------------------------------------------------------------------------------------------
# leap seconds, and keys the API adds


LEAP = datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2016-12-31T23:59:60Z",
        "2016-12-31t23:59:60z",
        "2016-12-31T23:59:60.5Z",
        "2016-12-31T23:59:60",
        "2017-01-01T08:59:60+09:00",
    ],
)
def test_a_leap_second_is_the_last_microsecond_of_its_minute(text: str) -> None:
    assert parse_timestamp(text, Where()) == LEAP
    before, after = (parse_timestamp(t, Where()) for t in ("2016-12-31T23:59:59.5Z", "2017-01-01T00:00:00Z"))
    assert before < LEAP < after


def test_a_checkpoint_made_in_a_leap_second_is_archived() -> None:
    body = payload()
    body["checkpoints"][0]["created_at"] = "2016-12-31T23:59:60Z"
    assert checkpoint_listing(body, "n4q95w5", "p7qr9qv").checkpoints[0]["created_at"] == LEAP


@pytest.mark.parametrize("text", ["2016-12-31T23:59:61Z", "2016-12-31T23:60:00Z", "2016-12-31T24:59:60Z"])
def test_only_second_60_is_a_leap_second(text: str) -> None:
    with pytest.raises(MalformedResponse, match="years 1-9999"):
        parse_timestamp(text, Where())


def test_keys_the_api_adds_to_a_jobs_project_summary_are_kept() -> None:
    body = payload()
    body["training_job"]["training_project"]["team_name"] = "ml-platform"
    job = checkpoint_listing(body, "n4q95w5", "p7qr9qv").job.row
    assert job["extra"] == {
        "training_project": {"id": "n4q95w5", "name": "qwen3-8b-support-sft", "team_name": "ml-platform"},
    }
    assert checkpoint_listing(payload(), "n4q95w5", "p7qr9qv").job.row["extra"] is None


# ------------------------------------------------------------------------------------------------
# pagination markers: the listings have no paging, so "there is more" makes a listing incomplete


def listed(kind: str, envelope: dict[str, Any]) -> Any:
    """A listing of two entries of `kind`, its response carrying `envelope` keys too."""
    if kind == "projects":
        return project_listing({"training_projects": [PROJECT, {**PROJECT, "id": "w2m81xk"}], **envelope})
    if kind == "jobs":
        jobs = [JOB, {**JOB, "id": "prwny3y"}]
        return job_listing({"training_project": PROJECT, "training_jobs": jobs, **envelope}, "n4q95w5")
    return checkpoint_listing(payload(**envelope), "n4q95w5", "p7qr9qv")


def entries(listing: Any) -> int:
    return len(getattr(listing, "projects", None) or getattr(listing, "jobs", None) or listing.checkpoints)


KINDS = ["projects", "jobs", "checkpoints"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("envelope", "said"),
    [
        ({"next_page_token": 1}, "next_page_token=1"),
        ({"next_page_token": 0}, "next_page_token=0"),  # an offset token: 0 is a page too
        ({"next_cursor": "abc"}, "next_cursor='abc'"),
        ({"next": "https://api.baseten.co/v1/training_projects?page=2"}, "next='https://api.baseten.co"),
        ({"has_more": True}, "has_more=True"),
        ({"total_count": 3}, "total_count=3 for 2 listed"),
        ({"total_count": 3.0, "has_more": None}, "(total_count=3 for 2 listed)"),
        ({"total_count": 2**70}, f"total_count={2**70} for 2 listed"),
    ],
)
def test_a_response_that_says_there_is_more_is_incomplete_and_keeps_its_entries(
    kind: str, envelope: dict[str, Any], said: str
) -> None:
    listing = listed(kind, envelope)
    assert not listing.complete and entries(listing) == 2
    assert said in str(listing.incomplete) and "so the listing is incomplete" in str(listing.incomplete)
    assert getattr(listing, "rejected", []) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "envelope",
    [
        {},
        {"next_page_token": None, "next_cursor": None, "next": None},
        {"next_page_token": "", "next_cursor": "", "next": ""},
        {"has_more": False},
        {"total_count": 2},
        {"total_count": 1},
        {"total_count": "2"},  # a count sent as a string
        {"total_count": "many"},  # not a count: an unknown envelope key
        {"total_count": True},
        {"request_id": "r-1", "page": 1, "links": {"self": "/v1/training_projects"}},
    ],
)
def test_a_response_that_says_nothing_more_is_complete(kind: str, envelope: dict[str, Any]) -> None:
    listing = listed(kind, envelope)
    assert listing.complete and listing.incomplete is None and entries(listing) == 2


def test_the_incomplete_listing_names_the_marker_and_the_counts() -> None:
    body = payload(next_page_token=1, total_count=3)
    del body["checkpoints"][1]
    assert str(checkpoint_listing(body, "n4q95w5", "p7qr9qv").incomplete) == (
        "project n4q95w5, job p7qr9qv: the response says there is more (next_page_token=1, total_count=3"
        " for 1 listed); this endpoint has no paging the archiver knows, so the listing is incomplete"
    )


def test_an_incomplete_checkpoint_listing_is_never_all_complete() -> None:
    body = payload()
    body["checkpoints"][1]["sync_status"] = "COMPLETE"
    assert checkpoint_listing(body, "n4q95w5", "p7qr9qv").all_complete
    body["has_more"] = True
    assert not checkpoint_listing(body, "n4q95w5", "p7qr9qv").all_complete


def test_a_job_search_that_says_there_is_more_answers_only_when_it_lists_the_job() -> None:
    assert project_of_job({"training_jobs": [JOB], "next_page_token": 1}, "p7qr9qv").project_id == "n4q95w5"
    with pytest.raises(MalformedResponse, match=r"there is more \(next_page_token=1\)"):
        project_of_job({"training_jobs": [], "next_page_token": 1}, "p7qr9qv")


# ------------------------------------------------------------------------------------------------
# every era of the published spec


# Where a field of the spec lands when it is not a column of the same name in its object's table.
LANDS_IN = {
    ("TrainingProjectV1", "latest_job"): "training_projects.latest_job_id",
    ("TrainingJobV1", "instance_type"): "training_jobs.instance_type_id",
    ("TrainingJobV1", "training_project"): "training_jobs.training_project_id",
    ("TrainingJobV1", "user"): "training_jobs.user_email",
    ("TrainingProjectSummaryV1", "id"): "training_jobs.training_project_id",
    ("TrainingProjectSummaryV1", "name"): "training_projects.name",
    ("UserV1", "email"): "training_jobs.user_email",
    ("TrainingJobCheckpointV1", "lora_adapter_config"): "checkpoints.lora_adapter_config_id",
}
TABLE_OF = {
    "TrainingProjectV1": "training_projects",
    "TrainingJobV1": "training_jobs",
    "InstanceTypeV1": "instance_types",
    "TrainingJobCheckpointV1": "checkpoints",
}
# Fields of the spec the archive keeps in `extra` as received, by design: none today.
KEPT_IN_EXTRA: set[tuple[str, str]] = set()


@pytest.mark.parametrize("era", sorted(ERAS))
def test_every_property_of_every_era_is_a_column_or_kept_in_extra(era: str) -> None:
    columns = {
        f"{table.name}.{column.name}" for table in metadata.tables.values() for column in table.columns
    }
    schemas = ERAS[era]
    for contract in CONTRACT:
        properties = set(schemas[contract.schema]["properties"])
        assert properties <= contract.known, (era, contract.schema, properties - contract.known)
        for name in properties:
            lands = LANDS_IN.get((contract.schema, name)) or f"{TABLE_OF.get(contract.schema)}.{name}"
            assert lands in columns or (contract.schema, name) in KEPT_IN_EXTRA, (era, contract.schema, name)
    envelopes = {name: set(schemas[name]["properties"]) for name in ENVELOPES}
    assert envelopes == {
        "GetTrainingJobCheckpointsResponseV1": {"training_job", "checkpoints"},
        "ListTrainingProjectsResponseV1": {"training_projects"},
        "ListTrainingJobsResponseV1": {"training_project", "training_jobs"},
        "SearchTrainingJobsResponseV1": {"training_jobs"},
    }
