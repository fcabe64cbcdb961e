"""`POST /v1/jobs?dry_run=true`: the cost and the verdict of a submission, and nothing written.

Runs on SQLite, on Postgres, and with Redis holding the counters, the window and the admission lock
(a dry run must not take a release slot from the moving window, which cannot give one back)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.jobs.models import Job
from service.ledger.models import AuditEvent
from service.quotas.models import BudgetReservation
from tests.factories import CLASSIFICATION as CLS
from tests.factories import NOISED


def post(a, metrics, dry_run, **extra):
    body = {"suite": CLS, "model": "demo-classifier@1", "dataset": "demo-blobs@1", "metrics": metrics, **extra}
    return a.client.post("/v1/jobs", headers=a.partner, params={"dry_run": "true"} if dry_run else {}, json=body)


def written(a):
    """Everything an admission writes: jobs, reservations, audit events."""
    with a.sessions() as s:
        return tuple(
            s.execute(select(func.count()).select_from(m)).scalar_one() for m in (Job, BudgetReservation, AuditEvent)
        )


def budget(a):
    r = a.client.get("/v1/budget", headers=a.partner)
    assert r.status_code == 200, r.text
    body = r.json()
    body["releases"].pop("resets_in_s")
    for daily in ("leakage_bits", "model_rows"):
        body[daily].pop("resets_in_s")
    return body


def test_a_dry_run_says_the_cost_and_writes_nothing(gate_api):
    a = gate_api()
    before, spent_before = written(a), budget(a)
    r = post(a, NOISED, dry_run=True)
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["dry_run"] is True and p["admitted"] is True and p["state"] == "queued" and p["refusal"] is None
    assert p["cost"]["epsilon_per_metric"] == 0.1 and p["cost"]["epsilon_total"] == pytest.approx(0.5)
    assert sorted(p["cost"]["noised_metrics"]) == sorted(NOISED)
    assert p["cost"]["leakage_bits"] > 0 and p["cost"]["model_rows"] == p["cost"]["model_rows_granted"] > 0
    assert p["left"]["epsilon"] == pytest.approx(0.5)
    assert p["left"]["jobs_in_progress"] == 1 and p["left"]["releases_in_window"] == 999
    assert written(a) == before and budget(a) == spent_before

    # The real submission spends exactly what the dry run said, and leaves what it said.
    real = post(a, NOISED, dry_run=False)
    assert real.status_code == 202, real.text
    assert real.json()["spec"]["privacy"]["epsilon_total"] == p["cost"]["epsilon_total"]
    assert real.json()["spec"]["leakage_bits"] == p["cost"]["leakage_bits"]
    after = budget(a)
    assert after["leakage_bits"]["left"] == pytest.approx(p["left"]["leakage_bits_today"], abs=1e-3)
    assert after["model_rows"]["left"] == p["left"]["model_rows_today"]
    assert after["epsilon"][0]["left"] == pytest.approx(p["left"]["epsilon"])
    assert after["releases"]["left"] == p["left"]["releases_in_window"]
    assert after["concurrent_jobs"]["active"] == p["left"]["jobs_in_progress"]


def test_a_dry_run_names_the_refusal_a_submission_would_get(gate_api):
    a = gate_api()
    assert post(a, NOISED, dry_run=False).status_code == 202  # 5 × 0.1 of the budget of 1.0
    other = NOISED[:4]  # another release, asking 4 × 0.2 = 0.8 > the 0.5 left
    p = post(a, other, dry_run=True, epsilon=0.2).json()
    assert p["admitted"] is False and p["state"] is None and p["cost"]["model_rows_granted"] == 0
    assert p["cost"]["epsilon_total"] == pytest.approx(0.8) and p["left"]["epsilon"] == pytest.approx(0.5)
    assert p["refusal"]["error"] == "privacy_budget_exhausted" and p["refusal"]["alternatives"]
    real = post(a, other, dry_run=False, epsilon=0.2)
    assert real.status_code >= 400
    assert real.json()["error"] == p["refusal"]["error"] and real.json()["alternatives"] == p["refusal"]["alternatives"]
    assert post(a, other, dry_run=True, epsilon=0.1).json()["admitted"] is True  # 4 × 0.1 fits


def test_dry_runs_take_no_release_slot(gate_api):
    a = gate_api(releases_per_window=1, release_window_s=60)
    before = written(a)
    for _ in range(3):
        p = post(a, ["accuracy"], dry_run=True).json()
        assert p["admitted"] is True and p["left"]["releases_in_window"] == 0
    assert written(a) == before
    assert post(a, ["accuracy"], dry_run=False).status_code == 202  # the one slot was still there
    p = post(a, ["ece"], dry_run=True).json()
    assert p["admitted"] is False and p["refusal"]["error"] == "release_rate_exceeded"


def test_a_bad_request_answers_as_its_submission_would_and_records_no_refusal(gate_api):
    a = gate_api()
    before = written(a)
    r = post(a, ["acuracy"], dry_run=True)
    assert r.status_code == 422 and r.json()["error"] == "undeclared_metric" and "accuracy" in r.json()["alternatives"]
    r = post(a, ["accuracy"], dry_run=True, epsilon=5.0)
    assert r.json()["error"] == "epsilon_above_policy"
    assert written(a) == before  # a real submission's refusal is on the audit log; a dry run's is not


def test_the_same_release_again_would_cost_nothing(gate_api):
    a = gate_api()
    job = post(a, ["accuracy"], dry_run=False).json()
    p = post(a, ["accuracy"], dry_run=True, seed=7).json()
    assert p["admitted"] is True and p["reuses"] == job["id"] and p["left"] is None
    assert p["cost"]["epsilon_total"] == 0 and p["cost"]["leakage_bits"] == 0 and p["cost"]["model_rows"] == 0
