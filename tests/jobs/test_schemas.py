"""What `POST /v1/jobs` refuses before anything is judged: text that is not Unicode (a lone surrogate,
which JSON's `\\ud800` escape can carry) and an ε too small to charge or to calibrate noise for. Each is
a 422 `invalid_request` naming the field, as a submission, as a dry run and as a twin job, never a 500;
and nothing is written, not even the refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from service.jobs.models import Job
from service.ledger.models import AuditEvent
from service.release.privacy import MIN_EPSILON
from tests.factories import job_spec
from tests.harness import Harness

LONE = "\ud800"  # half of a UTF-16 pair: no UTF-8 encoding exists for it


def send(api: Harness, body: dict[str, Any], **params: str) -> Any:
    """The body as JSON with `\\uXXXX` escapes (ensure_ascii), exactly as a hostile client may send it."""
    headers = api.partner | {"Content-Type": "application/json"}
    return api.client.post("/v1/jobs", headers=headers, content=json.dumps(body), params=params)


def written(api: Harness) -> tuple[int, int]:
    with api.db() as s:
        return tuple(s.execute(select(func.count()).select_from(m)).scalar_one() for m in (Job, AuditEvent))  # type: ignore[return-value]


def refused(r: Any, loc: list[Any]) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_request"
    assert [p["loc"] for p in body["detail"]] == [loc], body


UNICODE_CASES = [
    ({"model": f"demo{LONE}@1"}, ["body", "model"]),
    ({"dataset": f"demo-blobs@{LONE}"}, ["body", "dataset"]),
    ({"metrics": ["\udcff"]}, ["body", "metrics", 0]),
    ({"metrics": ["accuracy", f"accuracy@{LONE}"]}, ["body", "metrics", 1]),
    ({"suite": f"classification{LONE}@2.0.0"}, ["body", "suite"]),
    ({"output": f"probabilities{LONE}"}, ["body", "output"]),
    ({"approval_note": f"why{LONE}", "request_approval": True}, ["body", "approval_note"]),
]


def test_a_lone_surrogate_in_any_text_field_is_refused_as_an_invalid_request(api):
    before = written(api)
    for extra, loc in UNICODE_CASES:
        for params in ({}, {"dry_run": "true"}):
            refused(send(api, job_spec(**extra), **params), loc)
            refused(send(api, job_spec(**extra, target="twin"), **params), loc)
    assert written(api) == before


def test_references_as_long_as_names_and_versions_may_be_still_reach_the_registry(api):
    """The bound on a reference is above any name@version the registry takes, so a long one is
    answered by the registry (an unknown version, with its alternatives), not by the schema."""
    name, version = "a" * 64, "v" * 32
    r = send(api, job_spec(model=f"{name}@{version}"))
    assert r.status_code == 404 and r.json()["error"] == "unknown_model_version", r.text
    r = send(api, job_spec(dataset="demo-blobs@" + version))
    assert r.status_code == 404 and r.json()["error"] == "unknown_dataset_version", r.text
    assert r.json()["alternatives"] == ["demo-blobs@1"]
    r = send(api, job_spec(metrics=["m" * 64 + "@" + "s" * 32]))
    assert r.status_code == 422 and r.json()["error"] == "undeclared_metric", r.text


@pytest.mark.parametrize("epsilon", [5e-324, 1e-30, 1e-20, 1e-12, 4e-7, MIN_EPSILON * 0.999])
def test_an_epsilon_below_the_floor_is_refused_before_noise_is_calibrated(gate_api, epsilon):
    """Below MIN_EPSILON a job was a 500 (OpenDP found no Laplace scale under ~1e-13), or admitted and
    charged nothing at all (its total rounded to 0 millionths)."""
    a = gate_api()
    before = written(a)
    for params in ({}, {"dry_run": "true"}):
        r = send(a, job_spec(metrics=["accuracy"], epsilon=epsilon), **params)
        refused(r, ["body", "epsilon"])
        assert "greater than or equal to" in r.json()["detail"][0]["msg"]
    assert written(a) == before
    assert a.budget()["epsilon"] == []


def test_the_smallest_epsilon_taken_is_calibrated_and_charged(gate_api):
    a = gate_api()
    preview = send(a, job_spec(metrics=["accuracy"], epsilon=MIN_EPSILON), dry_run="true")
    assert preview.status_code == 200, preview.text
    assert preview.json()["cost"]["epsilon_total"] == MIN_EPSILON
    r = send(a, job_spec(metrics=["accuracy"], epsilon=MIN_EPSILON))
    assert r.status_code == 202, r.text
    assert [e["spent"] for e in a.budget()["epsilon"]] == [pytest.approx(MIN_EPSILON)]


def test_an_epsilon_between_millionths_is_charged_the_millionth_above(gate_api):
    """Budgets count whole millionths of ε: a job's total is rounded up, never down."""
    a = gate_api()
    r = send(a, job_spec(metrics=["accuracy", "ece"], epsilon=1.2e-6))
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["privacy"]["epsilon_total"] == pytest.approx(3e-6)  # 2.4e-6 spent, 3e-6 charged
    assert [e["spent"] for e in a.budget()["epsilon"]] == [pytest.approx(3e-6)]
