"""Operators deciding one request at the same moment: exactly one decision wins, on SQLite (where
`SELECT ... FOR UPDATE` holds nothing) as on Postgres; every other one is refused 409 and leaves
nothing behind (no audit event, no decision, no second move of the job)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from service.ledger import service as ledger
from tests.approvals.test_requests import PARTNER, REQUESTS, change, operator_view
from tests.factories import WIDE, suite_bundle, unique
from tests.harness import Harness

RACERS = 6
ROUNDS = [["accuracy"], ["macro_f1"], ["accuracy", "macro_f1"]]  # a few: the interleaving differs each time


def ask(api: Harness, metrics: list[str]) -> dict:
    """A job waiting for approval; each round its own release (the same one asked again is reused)."""
    r = api.post_job(metrics=metrics, request_approval=True, resources={"query_budget": 100})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


Racer = tuple[str, dict[str, str], dict[str, str] | None]  # path, headers, JSON body


def race(api: Harness, racers: list[Racer]) -> list[httpx.Response]:
    """Every racer POSTs to its path as nearly at once as threads allow."""
    start = threading.Barrier(len(racers))

    def one(racer: Racer) -> httpx.Response:
        path, headers, body = racer
        start.wait()
        return api.client.post(path, headers=headers, json=body)

    with ThreadPoolExecutor(len(racers)) as pool:
        return list(pool.map(one, racers))


def decide(request_id: int, verb: str, headers: dict[str, str]) -> Racer:
    return f"{REQUESTS}/{request_id}/{verb}", headers, {"reason": "x"}


def audit(api: Harness, request_id: int) -> list[str]:
    with api.db() as s:
        assert ledger.verify(s).ok
        return [e["action"] for e in ledger.events_for(s, f"approval:{request_id}")]


def test_a_grant_and_denials_racing_on_one_request_decide_it_once(api):
    change(api, PARTNER, max_query_budget=50)
    for metrics in ROUNDS:
        job = ask(api, metrics)
        request_id = job["approval"]["id"]
        verbs = ["grant", "deny"] * (RACERS // 2)
        answers = race(api, [decide(request_id, v, api.operator) for v in verbs])

        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200] + [409] * (RACERS - 1), [r.text for r in answers]
        assert all(r.json()["error"] == "approval_already_decided" for r in answers if r.status_code == 409)
        won = verbs[[r.status_code for r in answers].index(200)]
        decided = "granted" if won == "grant" else "denied"
        found = api.client.get(f"{REQUESTS}/{request_id}", headers=api.operator).json()
        assert found["state"] == decided and len(found["decisions"]) == 1
        assert audit(api, request_id) == ["approval.requested", f"approval.{decided}"]
        seen = operator_view(api, job["id"])
        enqueued = [e for e in api.dispatcher.enqueued if e[0] == job["id"]]
        if won == "grant":
            assert seen["state"] == "queued" and enqueued == [(job["id"], "queued")]
        else:
            assert seen["state"] == "cancelled" and enqueued == []
        transitions = [e["data"]["to"] for e in api.events(job["id"]) if e["action"] == "job.transition"]
        assert transitions[-1] == seen["state"] and transitions.count(seen["state"]) == 1


def test_two_operators_granting_at_once_settle_the_request(api):
    """Where two operators must grant, two distinct ones granting together both count: the request is
    granted (neither grant is lost), and the job is queued once."""
    api.settings.approvals_two_operators = True
    second = api.key("ops2", "operator")
    change(api, PARTNER, max_query_budget=50)
    for metrics in ROUNDS:
        job = ask(api, metrics)
        request_id = job["approval"]["id"]
        answers = race(api, [decide(request_id, "grant", api.operator), decide(request_id, "grant", second)])
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        found = api.client.get(f"{REQUESTS}/{request_id}", headers=api.operator).json()
        assert found["state"] == "granted" and len(found["decisions"]) == 2
        assert audit(api, request_id) == ["approval.requested", "approval.granted", "approval.granted"]
        assert operator_view(api, job["id"])["state"] == "queued"
        assert [e for e in api.dispatcher.enqueued if e[0] == job["id"]] == [(job["id"], "queued")]


def test_the_same_operator_granting_twice_at_once_counts_once(api):
    api.settings.approvals_two_operators = True
    change(api, PARTNER, max_query_budget=50)
    for metrics in ROUNDS:
        job = ask(api, metrics)
        request_id = job["approval"]["id"]
        answers = race(api, [decide(request_id, "grant", api.operator)] * 3)
        assert sorted(r.status_code for r in answers) == [200, 409, 409], [r.text for r in answers]
        assert {r.json()["error"] for r in answers if r.status_code == 409} == {"second_operator_required"}
        found = api.client.get(f"{REQUESTS}/{request_id}", headers=api.operator).json()
        assert found["state"] == "pending" and len(found["decisions"]) == 1
        assert operator_view(api, job["id"])["state"] == "awaiting_approval"


def test_a_partner_cancelling_while_an_operator_grants_leaves_one_story(api):
    """The job's own end withdraws its request; racing a grant, either the grant wins (the job was
    queued, and the partner's cancel then ends a queued job) or the withdrawal does (the grant is 409)."""
    change(api, PARTNER, max_query_budget=50)
    for metrics in ROUNDS:
        job = ask(api, metrics)
        request_id = job["approval"]["id"]
        cancel: Racer = (f"/v1/jobs/{job['id']}/cancel", api.partner, None)
        granted_r, cancelled_r = race(api, [decide(request_id, "grant", api.operator), cancel])
        assert cancelled_r.status_code == 200, cancelled_r.text
        found = api.client.get(f"{REQUESTS}/{request_id}", headers=api.operator).json()
        assert operator_view(api, job["id"])["state"] == "cancelled"
        if granted_r.status_code == 200:
            assert found["state"] == "granted" and audit(api, request_id)[-1] == "approval.granted"
        else:
            assert granted_r.json()["error"] == "approval_already_decided"
            assert found["state"] == "withdrawn" and found["decisions"] == []
            assert audit(api, request_id) == ["approval.requested"]


def test_two_operators_approving_a_custom_suite_at_once_approve_it(api):
    """The first approval of a suite opens its request: two at once must find one request (two, each
    with one grant, left the suite unapproved after two distinct operators had approved it)."""
    api.settings.approvals_two_operators = True
    second = api.key("ops2", "operator")
    for _ in range(3):
        suite = api.upload_suite(suite_bundle(unique("s"), "pass", {"m": WIDE}), approve=False)
        job = api.submit(f"acme/{suite['name']}@1.0.0", ["m"])
        approve = f"/v1/suites/acme/{suite['name']}/1.0.0/approve"
        answers = race(api, [(approve, api.operator, {"reason": "x"}), (approve, second, {"reason": "y"})])
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert sorted(r.json()["approved"] for r in answers) == [False, True]
        requests = [
            r
            for r in api.client.get(REQUESTS, headers=api.operator).json()
            if r["suite"] == f"acme/{suite['name']}@1.0.0"
        ]
        assert [(r["state"], len(r["decisions"])) for r in requests] == [("granted", 2)]
        assert [e for e in api.dispatcher.enqueued if e[0] == job["id"]] == [(job["id"], "queued")]
