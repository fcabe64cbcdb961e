"""Quotas and policies as data: read with an ETag, changed by operators with If-Match and a reason,
on the audit and transparency logs, and applied from the next admission on."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select

from service.jobs.admission import ASK_OPERATOR
from service.ledger import service as ledger
from service.transparency.models import LogLeaf
from tests.harness import Harness

PARTNER = "/v1/policies/partners/acme"
DATASET = "/v1/policies/datasets/demo-blobs/1"


def put(api: Harness, path: str, etag: str | None = None, headers: dict[str, str] | None = None, **body: Any):
    h = dict(headers or api.operator)
    if etag is not None:
        h["If-Match"] = etag
    return api.client.put(path, headers=h, json={"reason": "test", **body})


def change(api: Harness, path: str, **body: Any) -> dict:
    """Read, then change what is set (merged with what was set), as an operator would."""
    r = api.client.get(path, headers=api.operator)
    assert r.status_code == 200, r.text
    merged = {k: v for k, v in r.json()["set"].items() if v is not None} | body
    r = put(api, path, r.headers["ETag"], **merged)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_unset_policies_are_the_settings(api):
    r = api.client.get(PARTNER, headers=api.operator)
    assert r.status_code == 200 and r.headers["ETag"] == '"0"'
    body = r.json()
    assert body["limits"]["max_concurrent_jobs"] == api.settings.max_concurrent_jobs
    assert body["limits"]["rows_per_day"] == api.settings.partner_rows_per_day
    assert body["public_name"] == "acme" and body["models"] is None and body["set"]["rows_per_day"] is None
    rules = api.client.get(DATASET, headers=api.researcher).json()["rules"]
    assert rules["min_dataset_rows"] == api.settings.min_dataset_rows
    assert rules["dp_mechanism"] == api.settings.dp_mechanism


def test_a_change_needs_if_match_a_current_etag_and_a_reason(api):
    assert put(api, PARTNER, rows_per_day=5).json()["error"] == "if_match_required"
    assert put(api, PARTNER, rows_per_day=5).status_code == 428
    r = put(api, PARTNER, '"0"', rows_per_day=5, reason="  ")
    assert r.status_code == 422 and r.json()["error"] == "reason_required"
    first = put(api, PARTNER, '"0"', rows_per_day=5)
    assert first.status_code == 200 and first.headers["ETag"] == '"1"'
    # A second operator who read version 0 does not silently overwrite the first.
    stale = put(api, PARTNER, '"0"', rows_per_day=9)
    assert stale.status_code == 412 and stale.json()["error"] == "policy_changed"
    assert put(api, PARTNER, '"junk"', rows_per_day=9).status_code == 412
    assert api.client.get(PARTNER, headers=api.operator).json()["limits"]["rows_per_day"] == 5


def test_values_are_validated(api):
    r = put(api, PARTNER, '"0"', rows_per_day=-1)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert r.json()["detail"][0]["loc"] == ["body", "rows_per_day"]
    assert put(api, PARTNER, '"0"', colour="red").status_code == 422
    r = put(api, PARTNER, '"0"', models=["no-such-model"])
    assert r.status_code == 422 and r.json()["error"] == "unknown_asset"
    r = put(api, DATASET, '"0"', epsilon_per_metric=0.9, max_epsilon_per_metric=0.5)
    assert r.status_code == 422 and r.json()["error"] == "policy_invalid"
    r = put(api, DATASET, '"0"', dp_mechanism="fourier")
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_who_may_read_and_change(api):
    assert api.client.get(PARTNER, headers=api.partner).status_code == 200  # its own
    other = api.client.get("/v1/policies/partners/globex", headers=api.partner)
    unknown = api.client.get("/v1/policies/partners/nobody", headers=api.partner)
    assert other.status_code == unknown.status_code == 404 and other.json()["error"] == unknown.json()["error"]
    assert api.client.get(PARTNER, headers=api.researcher).status_code == 403
    assert api.client.get(DATASET, headers=api.researcher).status_code == 200
    assert api.client.get(DATASET, headers=api.partner).status_code == 200
    for who in (api.partner, api.researcher):
        assert put(api, PARTNER, '"0"', headers=who, rows_per_day=10**9).status_code == 403
        assert put(api, DATASET, '"0"', headers=who, min_dataset_rows=1).status_code == 403
    assert api.client.get("/v1/policies/datasets/nope/1", headers=api.operator).status_code == 404
    listed = api.client.get("/v1/policies/partners", headers=api.operator)
    assert [p["partner"] for p in listed.json()] == ["acme", "globex"]
    assert api.client.get("/v1/policies/partners", headers=api.partner).status_code == 403


def test_every_change_is_on_the_audit_log_and_the_transparency_log(api):
    change(api, PARTNER, max_concurrent_jobs=3)
    r = api.client.get(PARTNER, headers=api.operator)
    assert put(api, PARTNER, r.headers["ETag"], max_concurrent_jobs=7, reason="more room").status_code == 200
    with api.db() as s:
        events = [e for e in ledger.events_for(s, "principal:acme") if e["action"] == "policy.partner_changed"]
        leaves = s.execute(select(LogLeaf).where(LogLeaf.kind == "policy")).scalars().all()
        assert ledger.verify(s).ok
    assert [e["data"]["new"]["max_concurrent_jobs"] for e in events] == [3, 7]
    last = events[-1]
    assert last["actor"] == "operator:ops" and last["data"]["reason"] == "more room"
    assert last["data"]["old"]["max_concurrent_jobs"] == 3 and last["data"]["changed"] == ["max_concurrent_jobs"]
    assert len(leaves) == 2
    assert "acme" not in leaves[-1].data and json.loads(leaves[-1].data)["scope"] == "partner"


def test_lowering_below_what_is_spent_refuses_new_jobs_and_lets_running_ones_finish(api, demo_files):
    from service.jobs import runner
    from tests.stubs import StubSandbox, context, released_outcome

    first = api.post_job(metrics=["accuracy"], resources={"query_budget": 1000})
    second = api.post_job(metrics=["macro_f1"], resources={"query_budget": 1000})
    assert first.status_code == second.status_code == 202
    change(api, PARTNER, max_concurrent_jobs=1)
    refused = api.post_job(metrics=["balanced_accuracy"], resources={"query_budget": 1000})
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_concurrent_jobs"
    assert refused.json()["alternatives"] and "Retry-After" in refused.headers
    # The jobs admitted before the change go on to their release.
    runner.run_job(context(api, StubSandbox(released_outcome(demo_files["data"]))), first.json()["id"])
    time.sleep(api.settings.timing_buckets_s[0] + 0.05)
    assert api.client.get(f"/v1/jobs/{first.json()['id']}", headers=api.partner).json()["state"] == "released"
    # Raising the limit lets the waiting partner in at once.
    change(api, PARTNER, max_concurrent_jobs=5)
    assert api.post_job(metrics=["balanced_accuracy"], resources={"query_budget": 1000}).status_code == 202


def test_lowering_the_daily_rows_below_todays_use(api):
    assert api.post_job(metrics=["accuracy"], resources={"query_budget": 1000}).status_code == 202
    change(api, PARTNER, rows_per_day=500)
    r = api.post_job(metrics=["macro_f1"], resources={"query_budget": 100})
    assert r.status_code == 429 and r.json()["error"] == "daily_query_budget_exhausted"
    assert api.budget()["model_rows"]["limit"] == 500
    change(api, PARTNER, rows_per_day=10_000)
    assert api.post_job(metrics=["macro_f1"], resources={"query_budget": 100}).status_code == 202


def test_the_largest_query_budget_and_the_models_a_partner_may_use(api):
    change(api, PARTNER, max_query_budget=50)
    r = api.post_job(metrics=["accuracy"], resources={"query_budget": 100})
    assert r.status_code == 422 and r.json()["error"] == "resources_exceed_limit"
    assert r.json()["alternatives"] == ["query_budget <= 50", ASK_OPERATOR]
    change(api, PARTNER, max_query_budget=None, models=[])  # none at all
    r = api.post_job(metrics=["accuracy"], resources={"query_budget": 100})
    assert r.status_code == 403 and r.json()["error"] == "model_not_allowed"
    change(api, PARTNER, models=["demo-classifier"], datasets=["demo-blobs@1"])
    assert api.post_job(metrics=["accuracy"], resources={"query_budget": 100}).status_code == 202


def test_dataset_policy_applies_at_admission(api):
    change(api, DATASET, min_dataset_rows=10**6)
    r = api.post_job(metrics=["accuracy"], resources={"query_budget": 100})
    assert r.status_code == 422 and r.json()["error"] == "dataset_too_small"
    change(api, DATASET, min_dataset_rows=None, dp_mechanism="laplace", max_epsilon_per_metric=0.2)
    r = api.post_job(metrics=["accuracy"], resources={"query_budget": 100}, epsilon=0.3)
    assert r.json()["error"] == "epsilon_above_policy" and r.json()["alternatives"] == ["epsilon <= 0.2", ASK_OPERATOR]
    # The dataset's ε budget caps every partner's on it, whatever the partner's own.
    change(api, DATASET, epsilon_budget=0.25)
    assert api.post_job(metrics=["accuracy"], resources={"query_budget": 100}, epsilon=0.2).status_code == 202
    r = api.post_job(metrics=["macro_f1"], resources={"query_budget": 100}, epsilon=0.2)
    assert r.status_code == 403 and r.json()["error"] == "privacy_budget_exhausted"
    assert api.budget()["epsilon"][0]["budget"] == 0.25


def test_the_gate_applies_the_dataset_policy_as_it_is_when_the_job_is_gated(api, demo_files):
    from service.jobs import runner
    from tests.stubs import StubSandbox, context, released_outcome

    job = api.post_job(metrics=["recall_class_0"], resources={"query_budget": 1000}).json()
    change(api, DATASET, suppress_below_rows=10**6, suppress_below_class_rows=10**6)  # after its admission
    runner.run_job(context(api, StubSandbox(released_outcome(demo_files["data"]))), job["id"])
    time.sleep(api.settings.timing_buckets_s[0] + 0.05)
    read = api.client.get(f"/v1/jobs/{job['id']}", headers=api.partner).json()
    assert read["state"] == "released"
    assert "recall_class_0" not in read["result"]["metrics"]
    assert [s["metric"] for s in read["result"]["disclosure"]["suppressed"]] == ["recall_class_0"]


def test_public_names_are_the_operators_or_the_principals(api):
    from service.auth import repository as auth_repo
    from service.policies import service as policies

    change(api, PARTNER, public_name="Acme Research")
    with api.db() as s:
        acme, globex = (auth_repo.principal_by_name(s, n) for n in ("acme", "globex"))
        assert acme is not None and globex is not None
        assert policies.public_names(s, [acme.id, globex.id]) == {acme.id: "Acme Research", globex.id: "globex"}
    assert api.client.get(PARTNER, headers=api.partner).json()["public_name"] == "Acme Research"
