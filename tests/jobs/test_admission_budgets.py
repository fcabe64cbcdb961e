"""Admission against the release gate's budgets, through the HTTP API (no worker: jobs stay queued).

Runs on SQLite, on Postgres, and with Redis holding the counters, the window and the admission lock."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from service.jobs.admission import ASK_OPERATOR
from service.jobs.models import Job
from service.ledger.models import AuditEvent
from tests.factories import CLASSIFICATION as CLS
from tests.factories import NOISED


def submit(a, metrics, headers=None, **extra):
    return a.client.post(
        "/v1/jobs",
        headers=headers or a.partner,
        json={"suite": CLS, "model": "demo-classifier@1", "dataset": "demo-blobs@1", "metrics": metrics, **extra},
    )


def budget(a, headers=None, **params):
    r = a.client.get("/v1/budget", headers=headers or a.partner, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def count(a, model, *where):
    with a.sessions() as s:
        return s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def test_epsilon_is_spent_at_admission_and_refused_before_overspending(gate_api):
    a = gate_api()
    r = submit(a, NOISED)  # 5 noised metrics × 0.1
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["privacy"] == {
        "mechanism": "laplace",
        "epsilon_per_metric": 0.1,
        "epsilon_total": 0.5,
        "noised_metrics": NOISED,
        "delta": 0.0,
    }
    assert submit(a, ["accuracy", "ece"], epsilon=0.25).status_code == 202  # 0.5: 1.0 spent
    eps = budget(a)["epsilon"]
    assert eps == [{"dataset": "demo-blobs@1", "spent": 1.0, "budget": 1.0, "left": 0.0}]
    # The jobs' two (registering the dataset also spent the operator's own ε on its synthetic twin).
    assert count(a, AuditEvent, AuditEvent.action == "privacy.epsilon_spent", AuditEvent.subject.like("job:%")) == 2

    jobs_before = count(a, Job)
    r = submit(a, ["accuracy"])
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "privacy_budget_exhausted" and "0.000000 of your 1.0 is left" in body["detail"]
    assert any("larger epsilon budget" in alt for alt in body["alternatives"])
    # Nothing half-written, and the refusal itself is on the ledger.
    assert count(a, Job) == jobs_before and budget(a)["epsilon"][0]["spent"] == 1.0
    assert count(a, AuditEvent, AuditEvent.action == "job.refused") == 1
    # Every metric the service computes from the labels is noised, log loss too: none is free.
    assert submit(a, ["log_loss"]).json()["error"] == "privacy_budget_exhausted"


def test_refusal_lists_what_would_fit(gate_api, demo_files):
    a = gate_api(dp_epsilon_budget=0.5)
    with open(demo_files["data"], "rb") as f:
        assert (
            a.client.post(
                "/v1/datasets", headers=a.operator, data={"name": "demo-blobs", "version": "2"}, files={"file": f}
            ).status_code
            == 201
        )
    assert submit(a, ["accuracy", "ece", "macro_f1"]).status_code == 202  # 0.3 of 0.5
    r = submit(a, NOISED)  # needs 0.5
    assert r.status_code == 403
    alts = r.json()["alternatives"]
    assert any("request at most 2 of the noised metrics" in x for x in alts), alts
    assert any("epsilon <= 0.040000 per metric" in x for x in alts), alts
    assert any("demo-blobs@2" in x for x in alts), alts
    again = a.client.post(
        "/v1/jobs",
        headers=a.partner,
        json={"suite": CLS, "model": "demo-classifier@1", "dataset": "demo-blobs@2", "metrics": NOISED},
    )
    assert again.status_code == 202, again.text


def test_epsilon_above_policy_is_refused(gate_api):
    a = gate_api()
    r = submit(a, ["accuracy"], epsilon=0.6)
    assert r.status_code == 422 and r.json()["error"] == "epsilon_above_policy"
    assert r.json()["alternatives"] == ["epsilon <= 0.5", ASK_OPERATOR]


def test_the_same_release_asked_again_returns_the_earlier_job(gate_api):
    a = gate_api(dp_epsilon_budget=10, timing_buckets_s=[1.5])
    first = submit(a, NOISED, seed=1)
    assert first.status_code == 202 and not first.json()["reused"]
    spent = budget(a)["epsilon"][0]["spent"]
    # Another seed, another ε, another order of metrics: still the same release, so no fresh noise.
    again = submit(a, list(reversed(NOISED)), seed=2, epsilon=0.3)
    assert again.status_code == 200 and again.json()["reused"] and again.json()["id"] == first.json()["id"]
    assert budget(a)["epsilon"][0]["spent"] == spent
    assert len(a.dispatcher.enqueued) == 1
    # Another partner asking the same gets its own job; other metrics make another release.
    assert submit(a, NOISED, headers=a.other).json()["id"] != first.json()["id"]
    assert submit(a, ["accuracy"]).json()["id"] != first.json()["id"]
    # Once the earlier job is cancelled (as its partner sees it: at its padded time), the same request
    # runs afresh.
    assert a.client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=a.partner).json()["state"] == "running"
    time.sleep(a.settings.timing_buckets_s[-1] + 0.05)
    assert a.client.get(f"/v1/jobs/{first.json()['id']}", headers=a.partner).json()["state"] == "cancelled"
    fresh = submit(a, NOISED)
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]


def test_cancelling_a_queued_job_is_a_running_jobs_cancel_and_one_awaiting_approval_gives_all_back(gate_api):
    """A partner sees a queued job `running`: its cancel is answered, shown and charged as a running
    job's would be (nothing back, `cancelled` at the padded time), so it never tells whether the jobs
    before it had ended. A job awaiting approval waits where its partner sees it: all comes back."""
    a = gate_api(max_query_budget=5000, timing_buckets_s=[1.5])
    job = submit(a, NOISED).json()
    b = budget(a)
    assert b["epsilon"][0]["spent"] == 0.5 and b["leakage_bits"]["used"] > 0
    answer = a.client.post(f"/v1/jobs/{job['id']}/cancel", headers=a.partner).json()
    assert answer["state"] == "running" and answer["error_class"] is None
    with a.sessions() as s:
        assert s.get(Job, job["id"]).state == "cancelled"  # it never runs
    time.sleep(a.settings.timing_buckets_s[-1] + 0.05)
    assert a.client.get(f"/v1/jobs/{job['id']}", headers=a.partner).json()["state"] == "cancelled"
    assert budget(a)["epsilon"][0]["spent"] == 0.5 and budget(a)["leakage_bits"]["used"] == b["leakage_bits"]["used"]
    assert count(a, AuditEvent, AuditEvent.action == "privacy.epsilon_refunded") == 0

    waiting = submit(a, ["accuracy"], resources={"query_budget": 6000}, request_approval=True).json()
    assert waiting["state"] == "awaiting_approval", waiting
    assert budget(a)["epsilon"][0]["spent"] == 0.6
    answer = a.client.post(f"/v1/jobs/{waiting['id']}/cancel", headers=a.partner).json()
    assert answer["state"] == "cancelled"
    assert budget(a)["epsilon"][0]["spent"] == 0.5  # its 0.1 came back at once
    assert count(a, AuditEvent, AuditEvent.action == "privacy.epsilon_refunded") == 1


def test_daily_leakage_cap_refuses_with_retry_after(gate_api):
    a = gate_api(leakage_bits_per_day=60)
    first = submit(a, NOISED)
    assert first.status_code == 202
    used = budget(a)["leakage_bits"]["used"]
    assert 40 < used <= 60  # five noised metrics on 600 rows, the outcome and its time bucket
    r = submit(a, ["log_loss"])
    assert r.status_code == 429 and r.json()["error"] == "leakage_budget_exhausted"
    assert 0 < int(r.headers["retry-after"]) <= 86401
    assert budget(a)["leakage_bits"]["used"] == used  # the refused job reserved nothing


def test_concurrent_jobs_are_capped_and_recover(gate_api):
    a = gate_api(max_concurrent_jobs=1, timing_buckets_s=[1.5])
    first = submit(a, ["accuracy"]).json()
    r = submit(a, ["ece"])
    assert r.status_code == 429 and r.json()["error"] == "too_many_concurrent_jobs"
    assert budget(a)["concurrent_jobs"] == {"active": 1, "limit": 1}
    assert submit(a, ["ece"], headers=a.other).status_code == 202  # per partner
    a.client.post(f"/v1/jobs/{first['id']}/cancel", headers=a.partner)
    assert submit(a, ["ece"]).status_code == 429  # in progress, as its partner sees it, until its padded time
    time.sleep(a.settings.timing_buckets_s[-1] + 0.05)
    assert submit(a, ["ece"]).status_code == 202


def test_release_rate_is_hit_and_recovers(gate_api):
    a = gate_api(releases_per_window=2, release_window_s=2)
    assert [submit(a, [m]).status_code for m in ("accuracy", "ece")] == [202, 202]
    before = budget(a)
    r = submit(a, ["macro_f1"])
    assert r.status_code == 429 and r.json()["error"] == "release_rate_exceeded"
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= 3
    assert budget(a)["releases"]["left"] == 0
    # The refused job left nothing: its bits (reserved in Redis, outside the rolled-back transaction,
    # in the Redis run) and its model rows were given back.
    after = budget(a)
    assert after["leakage_bits"]["used"] == before["leakage_bits"]["used"] > 0 and count(a, Job) == 2
    assert after["model_rows"]["used"] == before["model_rows"]["used"] > 0
    time.sleep(wait + 0.2)
    assert submit(a, ["macro_f1"]).status_code == 202


def test_operators_set_limits_per_partner(gate_api):
    a = gate_api(partner_quotas={"acme": {"epsilon_budget": 0.15, "max_concurrent_jobs": 7}})
    assert submit(a, ["accuracy"]).status_code == 202
    assert submit(a, ["ece"]).status_code == 403  # acme: 0.1 of 0.15 spent
    assert submit(a, ["ece"], headers=a.other).status_code == 202  # globex: the default 1.0
    b = budget(a, headers=a.operator, partner="acme")
    assert b["partner"] == "acme" and b["epsilon_budget_per_dataset"] == 0.15 and b["concurrent_jobs"]["limit"] == 7


def test_who_may_read_a_budget(gate_api):
    a = gate_api()
    assert a.client.get("/v1/budget", headers=a.partner, params={"partner": "globex"}).status_code == 403
    assert a.client.get("/v1/budget", headers=a.researcher).json()["error"] == "partner_required"
    assert a.client.get("/v1/budget", headers=a.operator, params={"partner": "nobody"}).status_code == 404
    assert a.client.get("/v1/budget").status_code == 401
    b = budget(a)
    assert b["leakage_bits"]["limit"] == 4096 and b["model_rows"]["used"] == 0 and b["epsilon"] == []
