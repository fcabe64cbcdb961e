"""Requests above policy: a job that asks for more than its partner's policy waits for an operator,
who grants it (it runs with exactly what it asked) or denies it (it ends cancelled, with the reason);
optionally two distinct operators must grant, for suites too. Everything is on the audit log."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from service.jobs.admission import ASK_OPERATOR
from service.ledger import service as ledger
from service.transparency.models import LogLeaf
from tests.factories import WIDE, suite_bundle, unique
from tests.harness import Harness

PARTNER = "/v1/policies/partners/acme"
DATASET = "/v1/policies/datasets/demo-blobs/1"
REQUESTS = "/v1/approval-requests"


def change(api: Harness, path: str, **body: Any) -> None:
    r = api.client.get(path, headers=api.operator)
    merged = {k: v for k, v in r.json()["set"].items() if v is not None} | body
    r = api.client.put(path, headers=api.operator | {"If-Match": r.headers["ETag"]}, json={"reason": "t", **merged})
    assert r.status_code == 200, r.text


def ask(api: Harness, **spec: Any) -> dict:
    r = api.post_job(metrics=["accuracy"], request_approval=True, **spec)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def decide(api: Harness, request_id: int, verb: str, reason: str = "ok", headers: dict | None = None):
    return api.client.post(f"{REQUESTS}/{request_id}/{verb}", headers=headers or api.operator, json={"reason": reason})


def operator_view(api: Harness, job_id: str) -> dict:
    return api.client.get(f"/v1/jobs/{job_id}", headers=api.operator).json()  # type: ignore[no-any-return]


def test_a_larger_query_budget_waits_and_a_grant_queues_it_with_exactly_what_it_asked(api):
    change(api, PARTNER, max_query_budget=50)
    job = ask(api, resources={"query_budget": 100}, approval_note="one full pass")
    asked = [{"rule": "max_query_budget", "asked": 100, "limit": 50}]
    assert job["state"] == "awaiting_approval" and job["approval"]["state"] == "pending"
    assert job["approval"]["exceptions"] == asked and job["approval"]["note"] == "one full pass"
    assert job["spec"]["exceptions"] == asked and job["spec"]["resources"]["query_budget"] == 100
    assert api.dispatcher.enqueued == []  # nothing runs before an operator decides
    pending = api.client.get(REQUESTS, headers=api.operator, params={"state": "pending"}).json()
    assert [(p["job_id"], p["partner"], p["kind"]) for p in pending] == [(job["id"], "acme", "exception")]

    r = decide(api, pending[0]["id"], "grant", "pilot, ticket 7")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "granted" and r.json()["decisions"][0]["actor"] == "operator:ops"
    assert api.dispatcher.enqueued == [(job["id"], "queued")]  # committed before it was handed over
    seen = api.client.get(f"/v1/jobs/{job['id']}", headers=api.partner).json()
    assert seen["state"] == "running" and seen["approval"]["reason"] == "pilot, ticket 7"
    assert seen["spec"]["resources"]["query_budget"] == 100  # what was asked, and nothing else
    assert decide(api, pending[0]["id"], "grant").json()["error"] == "approval_already_decided"
    # Without the flag the same request is still refused, and offered the way to ask.
    r = api.post_job(metrics=["macro_f1"], resources={"query_budget": 100})
    assert r.status_code == 422 and ASK_OPERATOR in r.json()["alternatives"]


def test_epsilon_and_assets_above_policy_are_listed_together(api):
    change(api, DATASET, dp_mechanism="laplace", max_epsilon_per_metric=0.2)
    change(api, PARTNER, models=[], datasets=["demo-blobs@1"])
    refused = api.post_job(metrics=["accuracy"], epsilon=0.3)
    assert refused.status_code == 403 and refused.json()["error"] == "model_not_allowed"
    assert ASK_OPERATOR in refused.json()["alternatives"]
    job = ask(api, epsilon=0.3)
    assert job["approval"]["exceptions"] == [
        {"rule": "models", "asked": "demo-classifier@1", "limit": []},
        {"rule": "max_epsilon_per_metric", "asked": 0.3, "limit": 0.2},
    ]
    assert job["spec"]["privacy"]["epsilon_per_metric"] == 0.3


def test_a_denial_ends_the_job_cancelled_with_its_reason_and_gives_back_what_it_reserved(api):
    change(api, PARTNER, max_query_budget=50)
    job = ask(api, resources={"query_budget": 400})
    assert api.budget()["model_rows"]["used"] == 400  # reserved at admission, as any job's
    request_id = job["approval"]["id"]
    assert decide(api, request_id, "deny", "   ").json()["error"] == "reason_required"
    r = decide(api, request_id, "deny", "one pass is enough")
    assert r.status_code == 200 and r.json()["state"] == "denied"
    seen = api.client.get(f"/v1/jobs/{job['id']}", headers=api.partner).json()
    assert seen["state"] == "cancelled" and seen["error_class"] == "cancelled"
    assert seen["approval"]["state"] == "denied" and seen["approval"]["reason"] == "one pass is enough"
    assert api.budget()["model_rows"]["used"] == 0 and api.dispatcher.enqueued == []
    assert decide(api, request_id, "grant").status_code == 409


def test_a_cancelled_job_withdraws_its_request(api):
    change(api, PARTNER, max_query_budget=50)
    job = ask(api, resources={"query_budget": 100})
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.partner).status_code == 200
    found = api.client.get(f"{REQUESTS}/{job['approval']['id']}", headers=api.operator).json()
    assert found["state"] == "withdrawn"
    r = decide(api, job["approval"]["id"], "grant")
    assert r.status_code == 409 and r.json()["error"] == "approval_already_decided"


def test_a_request_within_policy_is_admitted_as_usual(api):
    job = ask(api)
    assert job["approval"] is None and "exceptions" not in job["spec"]
    assert api.dispatcher.enqueued == [(job["id"], "queued")]


def test_only_operators_decide_and_requests_are_audited(api):
    change(api, PARTNER, max_query_budget=50)
    job = ask(api, resources={"query_budget": 100})
    request_id = job["approval"]["id"]
    for who in (api.partner, api.researcher):
        assert decide(api, request_id, "grant", headers=who).status_code == 403
        assert api.client.get(REQUESTS, headers=who).status_code == 403
    assert decide(api, 10**6, "grant").json()["error"] == "approval_request_not_found"
    assert api.client.post(f"{REQUESTS}/{request_id}/grant", headers=api.operator, json={}).status_code == 422
    assert decide(api, request_id, "grant", "fine").status_code == 200
    with api.db() as s:
        events = ledger.events_for(s, f"approval:{request_id}")
        leaves = s.execute(select(LogLeaf).where(LogLeaf.kind == "policy")).scalars().all()
        assert ledger.verify(s).ok
    assert [e["action"] for e in events] == ["approval.requested", "approval.granted"]
    assert events[0]["actor"] == "partner:acme" and events[1]["data"]["reason"] == "fine"
    assert [json.loads(leaf.data)["scope"] for leaf in leaves][-1] == "approval"
    assert "acme" not in leaves[-1].data


def test_two_operators_must_grant_and_the_same_one_twice_is_refused(api):
    api.settings.approvals_two_operators = True
    second = api.key("ops2", "operator")
    change(api, PARTNER, max_query_budget=50)
    job = ask(api, resources={"query_budget": 100})
    request_id = job["approval"]["id"]
    first = decide(api, request_id, "grant", "looks fine")
    assert first.status_code == 200 and first.json()["state"] == "pending" and first.json()["grants_needed"] == 2
    again = decide(api, request_id, "grant", "really")
    assert again.status_code == 409 and again.json()["error"] == "second_operator_required"
    assert operator_view(api, job["id"])["state"] == "awaiting_approval" and api.dispatcher.enqueued == []
    r = decide(api, request_id, "grant", "agreed", headers=second)
    assert r.status_code == 200 and r.json()["state"] == "granted"
    assert [d["actor"] for d in r.json()["decisions"]] == ["operator:ops", "operator:ops2"]
    assert api.dispatcher.enqueued == [(job["id"], "queued")]


def test_two_operators_approve_a_custom_suite_and_its_waiting_jobs_run_only_then(api):
    api.settings.approvals_two_operators = True
    second = api.key("ops2", "operator")
    suite = api.upload_suite(suite_bundle(unique("s"), "pass", {"m": WIDE}), approve=False)
    job = api.submit(f"acme/{suite['name']}@1.0.0", ["m"])
    approve = f"/v1/suites/acme/{suite['name']}/1.0.0/approve"
    r = api.client.post(approve, headers=api.operator, json={"reason": "read the code"})
    assert r.status_code == 200 and r.json()["approved"] is False and api.dispatcher.enqueued == []
    assert api.client.post(approve, headers=api.operator).json()["error"] == "second_operator_required"
    r = api.client.post(approve, headers=second)
    assert r.status_code == 200 and r.json()["approved"] is True
    assert api.dispatcher.enqueued == [(job["id"], "queued")]
    kinds = [p["kind"] for p in api.client.get(REQUESTS, headers=api.operator).json()]
    assert kinds == ["suite"]


def test_a_granted_exception_on_an_unapproved_suite_waits_for_the_suite_too(api):
    change(api, PARTNER, max_query_budget=50)
    suite = api.upload_suite(suite_bundle(unique("s"), "pass", {"m": WIDE}), approve=False)
    r = api.post_job(
        suite=f"acme/{suite['name']}@1.0.0", metrics=["m"], request_approval=True, resources={"query_budget": 100}
    )
    job = r.json()
    approve = f"/v1/suites/acme/{suite['name']}/1.0.0/approve"
    # The suite first: the job still waits for its exception.
    assert api.client.post(approve, headers=api.operator).status_code == 200
    assert operator_view(api, job["id"])["state"] == "awaiting_approval" and api.dispatcher.enqueued == []
    assert decide(api, job["approval"]["id"], "grant").status_code == 200
    assert api.dispatcher.enqueued == [(job["id"], "queued")]
