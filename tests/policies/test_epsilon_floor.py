"""An ε per metric below MIN_EPSILON is refused where an operator sets it (a partner's ceiling, a
dataset version's default and ceiling). One set before there was a floor stays readable and
replaceable, and the jobs it would govern are refused 422 with the reason, not answered 500."""

from __future__ import annotations

from typing import Any

import pytest

from service.policies import service as policies
from service.policies.schemas import DatasetPolicyValues, PartnerPolicyValues
from service.release.privacy import MIN_EPSILON
from tests.harness import Harness

PARTNER = "/v1/policies/partners/acme"
DATASET = "/v1/policies/datasets/demo-blobs/1"


def put(api: Harness, path: str, **body: Any) -> Any:
    etag = api.client.get(path, headers=api.operator).headers["ETag"]
    return api.client.put(path, headers=api.operator | {"If-Match": etag}, json={"reason": "test", **body})


def submit(api: Harness, **params: str) -> Any:
    body = {"suite": "classification@2.0.0", "model": "demo-classifier@1", "dataset": "demo-blobs@1"}
    return api.client.post("/v1/jobs", headers=api.partner, params=params, json={**body, "metrics": ["accuracy"]})


@pytest.mark.parametrize(
    ("path", "field"),
    [(DATASET, "epsilon_per_metric"), (DATASET, "max_epsilon_per_metric"), (PARTNER, "max_epsilon_per_metric")],
)
def test_an_epsilon_below_the_floor_is_refused_where_an_operator_sets_it(api, path, field):
    for tiny in (5e-324, 1e-30, 1e-20, 4e-7):
        r = put(api, path, **{field: tiny})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
        assert r.json()["detail"][0]["loc"] == ["body", field]
    assert api.client.get(path, headers=api.operator).json()["set"][field] is None  # nothing was set
    extra = {"epsilon_per_metric": MIN_EPSILON} if field == "max_epsilon_per_metric" and path == DATASET else {}
    r = put(api, path, **{field: MIN_EPSILON}, **extra)
    assert r.status_code == 200, r.text
    assert r.json()["set"][field] == MIN_EPSILON


def test_a_dataset_default_set_before_the_floor_refuses_jobs_with_the_reason(api):
    with api.db() as s:  # as `evalgate policy set` could, or the API before the floor
        values = DatasetPolicyValues(dp_mechanism="laplace", epsilon_per_metric=1e-30, max_epsilon_per_metric=0.5)
        policies.set_dataset(s, api.settings, "demo-blobs", "1", values, reason="old", actor="cli:t", if_match=0)
    read = api.client.get(DATASET, headers=api.operator)
    assert read.status_code == 200 and read.json()["set"]["epsilon_per_metric"] == 1e-30
    for params in ({}, {"dry_run": "true"}):
        r = submit(api, **params)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
        assert f"at least {MIN_EPSILON:g}" in r.json()["detail"]
        assert r.json()["alternatives"] == [f"epsilon >= {MIN_EPSILON:g}"]
    # The job may name its own ε instead; and the operator can replace the old value.
    assert api.post_job(metrics=["accuracy"], epsilon=0.1).status_code == 202
    assert put(api, DATASET, dp_mechanism="laplace", epsilon_per_metric=0.1).status_code == 200
    assert submit(api).status_code in (200, 202)


def test_a_partner_ceiling_set_before_the_floor_refuses_jobs_with_the_reason(api):
    assert put(api, DATASET, dp_mechanism="laplace").status_code == 200
    with api.db() as s:
        values = PartnerPolicyValues(max_epsilon_per_metric=1e-30)
        policies.set_partner(s, api.settings, "acme", values, reason="old", actor="cli:t", if_match=0)
    assert api.client.get(PARTNER, headers=api.operator).status_code == 200
    r = submit(api, dry_run="true")
    assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
