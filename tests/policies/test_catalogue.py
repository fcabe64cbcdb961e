"""The policy catalogue: every role reads each rule with its parameters and rationale, and every
refusal at admission names the rule it came from."""

from __future__ import annotations

from typing import Any

from service.errors import Forbidden, TooManyRequests, catalogue
from service.policies.catalogue import RULES, rule_of
from tests.harness import Harness


def change(api: Harness, path: str, **body: Any) -> None:
    r = api.client.get(path, headers=api.operator)
    merged = {k: v for k, v in r.json()["set"].items() if v is not None} | body
    r = api.client.put(path, headers=api.operator | {"If-Match": r.headers["ETag"]}, json={"reason": "t", **merged})
    assert r.status_code == 200, r.text


def test_every_role_reads_the_catalogue_with_the_deployments_values(api):
    for who in (api.partner, api.researcher, api.operator):
        r = api.client.get("/v1/policies", headers=who)
        assert r.status_code == 200, r.text
    rules = {rule["id"]: rule for rule in r.json()}
    assert len(rules) == len(RULES) and all(rule["rationale"] for rule in rules.values())
    assert rules["jobs_in_progress"]["parameters"] == {"max_concurrent_jobs": api.settings.max_concurrent_jobs}
    assert rules["sanctions"]["errors"] == ["partner_suspended"]
    assert "output_rejected" in rules["result_format"]["outcomes"]
    assert api.client.get("/v1/policies").status_code == 401


def test_a_refusal_names_its_rule(api):
    change(api, "/v1/policies/datasets/demo-blobs/1", dp_mechanism="laplace", max_epsilon_per_metric=0.2)
    r = api.post_job(metrics=["accuracy"], epsilon=0.3)
    assert r.json()["error"] == "epsilon_above_policy" and r.json()["rule"] == "epsilon_per_metric"
    change(api, "/v1/policies/partners/acme", models=[])
    assert api.post_job(metrics=["accuracy"]).json()["rule"] == "asset_access"
    # A request the API cannot read comes from no rule: it has none to name.
    r = api.client.post("/v1/jobs", headers=api.partner, json={"suite": "x"})
    assert r.status_code == 422 and "rule" not in r.json()


def test_every_budget_and_policy_refusal_comes_from_a_rule():
    refusals = [
        c
        for c in catalogue()
        if c.__module__ in ("service.quotas.errors", "service.policies.errors", "service.sanctions.errors")
        and issubclass(c, Forbidden | TooManyRequests)
    ]
    assert refusals
    assert [c.code for c in refusals if rule_of(c.code) is None] == []
    assert len({r.id for r in RULES}) == len(RULES)
    known = {c.code for c in catalogue()}
    assert all(e.code in known for r in RULES for e in r.errors)
