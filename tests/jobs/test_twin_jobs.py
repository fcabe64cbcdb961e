"""Twin jobs (`"target": "twin"`) with a stub sandbox, on SQLite and Postgres: the real API admits them,
the real runner runs them on the twin and stand-in and judges them with the release gate's code; the
partner sees the output and the verdict, spends nothing but one of the day's twin jobs, and nothing
is released, signed or logged publicly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from service.jobs import runner
from service.jobs.models import Job
from service.jobs.states import JobState
from service.registry import storage
from service.release.models import Result
from service.sanctions.models import PartnerTrip
from service.sandbox.spec import Outcome
from service.transparency.models import LogLeaf
from service.twins import service as twins
from service.twins.models import Twin
from tests import factories
from tests.stubs import StubSandbox, context, crashed_outcome, past_its_padding, rows_file

PARTNER_POLICY = "/v1/policies/partners/acme"
TRACEBACK = 'Traceback (most recent call last):\n  File "main.py", line 3\nZeroDivisionError: division by zero\n'


def twin_job(api, **extra) -> dict:
    r = api.post_job(target="twin", metrics=["accuracy", "macro_f1"], **extra)
    assert r.status_code == 202, r.text
    return r.json()


def twin_file(api, job: dict) -> Path:
    return storage.blob_path(twins.store_dir(api.settings), job["spec"]["twin"]["dataset"]["sha256"])


def spent(api) -> dict:
    """The partner's real budgets, without the clocks."""
    body = api.budget()
    body["releases"].pop("resets_in_s")
    for daily in ("leakage_bits", "model_rows"):
        body[daily].pop("resets_in_s")
    return body


def public(api) -> tuple[int, int]:
    """Transparency-log leaves and releases."""
    with api.db() as s:
        return tuple(s.execute(select(func.count()).select_from(m)).scalar_one() for m in (LogLeaf, Result))


def test_a_twin_job_runs_on_the_twin_and_stand_in_shows_its_output_and_verdict_and_spends_nothing(api):
    before, published = spent(api), public(api)
    job = twin_job(api)
    assert job["target"] == "twin" and job["state"] == "queued" and job["twin"] is None
    assert job["spec"]["privacy"]["epsilon_total"] >= 0  # what the real job would spend, charged to nobody
    with np.load(twin_file(api, job)) as npz:
        labels = npz["y"]
    good = Outcome(
        exit_code=0,
        result=rows_file(labels, wrong=len(labels) // 10, classes=int(labels.max()) + 1),
        usage={"rows": len(labels), "requests": 2, "budget_exceeded": False},
        stdout="read 600 rows\n",
        stderr="",
        job_log="read 600 rows\n",
    )
    sandbox = StubSandbox(good)
    assert runner.run_job(context(api, sandbox), job["id"]) == JobState.JUDGED

    ran = sandbox.runs[0]
    store = twins.store_dir(api.settings)
    assert ran.model_path.is_relative_to(store) and ran.dataset_path.is_relative_to(store)  # never the real blobs
    assert ran.model_path.name == job["spec"]["twin"]["model"]["sha256"]
    assert ran.query_budget_rows == len(labels) and ran.separate_output_bytes == api.settings.twin_log_cap_bytes
    with np.load(ran.dataset_path) as npz:
        assert sorted(npz.files) == ["x"]  # rows mode: the job's code gets the twin's features only

    seen = api.client.get(f"/v1/jobs/{job['id']}", headers=api.partner).json()
    assert seen["state"] == "judged" and seen["result"] is None and seen["finished_at"] is not None  # not padded
    assert seen["twin"]["stdout"] == "read 600 rows\n" and seen["twin"]["usage"]["rows"] == len(labels)
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.operator).json()["twin"] == seen["twin"]
    researcher = api.client.get("/v1/jobs", headers=api.researcher).json()["jobs"]
    assert all(j["twin"] is None for j in researcher)  # the partner's own output: not for researchers
    verdict = seen["twin"]["verdict"]
    assert verdict["outcome"] == "released" and sorted(verdict["metrics"]) == ["accuracy", "macro_f1"]
    assert 0 <= verdict["metrics"]["accuracy"] <= 1 and "noise" in verdict["disclosure"]
    assert verdict["would_cost"]["epsilon_total"] == job["spec"]["privacy"]["epsilon_total"]
    assert spent(api) == before and public(api) == published  # no ε, bits, rows, slot; no release, no leaf
    actions = [e["action"] for e in api.events(job["id"])]
    assert "result.released" not in actions and "leakage.bits_settled" not in actions


def test_a_crashing_twin_job_shows_its_traceback_and_a_real_one_never_does(api, demo_files):
    before = spent(api)
    job = twin_job(api)
    crashed = crashed_outcome(TRACEBACK)
    crashed.stdout, crashed.stderr = "starting\n", TRACEBACK
    assert runner.run_job(context(api, StubSandbox(crashed)), job["id"]) == JobState.FAILED
    seen = api.client.get(f"/v1/jobs/{job['id']}", headers=api.partner).json()
    assert seen["error_class"] == "crashed" and "ZeroDivisionError" in seen["twin"]["stderr"]
    assert seen["twin"]["verdict"]["outcome"] == "failed" and seen["twin"]["exit_code"] == 1
    assert spent(api) == before

    # The same crash on the real data: the partner gets the error class, never the output.
    real = api.post_job(metrics=["accuracy"])
    assert real.status_code == 202, real.text
    assert runner.run_job(context(api, StubSandbox(crashed)), real.json()["id"]) == JobState.FAILED
    with api.db() as s:
        s.get(Job, real.json()["id"]).finished_at = s.get(Job, real.json()["id"]).created_at  # past its padding
    for who in (api.partner, api.operator):
        body = api.client.get(f"/v1/jobs/{real.json()['id']}", headers=who).json()
        assert body["target"] == "real" and body["twin"] is None and "ZeroDivisionError" not in str(body)


def test_a_twin_result_the_gate_refuses_shows_the_gates_reason(api):
    job = twin_job(api)
    bad = Outcome(exit_code=0, result_problem="result.npz is a symbolic link", usage={"rows": 1}, stdout="", stderr="")
    assert runner.run_job(context(api, StubSandbox(bad)), job["id"]) == JobState.REJECTED
    verdict = api.client.get(f"/v1/jobs/{job['id']}", headers=api.partner).json()["twin"]["verdict"]
    assert verdict["outcome"] == "rejected" and verdict["error_class"] == "output_rejected"
    assert "symbolic link" in verdict["reason"]
    # A twin job's rejection breaks no rule on private data: no hard-rule trip (service.sanctions).
    with api.db() as s:
        assert s.execute(select(func.count()).select_from(PartnerTrip)).scalar_one() == 0


def test_twin_jobs_count_against_their_own_live_daily_quota_and_a_dry_run_shows_what_is_left(api):
    r = api.client.get(PARTNER_POLICY, headers=api.operator)
    assert r.json()["limits"]["twin_jobs_per_day"] == api.settings.twin_jobs_per_day
    r = api.client.put(
        PARTNER_POLICY,
        headers=api.operator | {"If-Match": r.headers["ETag"]},
        json={"reason": "t", "twin_jobs_per_day": 2},
    )
    assert r.status_code == 200, r.text
    written = public(api), spent(api)
    preview = api.client.post("/v1/jobs", headers=api.partner, params={"dry_run": "true"}, json=twin_body()).json()
    assert preview["admitted"] is True and preview["twin_jobs_left"] == 1 and preview["refusal"] is None
    assert preview["cost"]["epsilon_total"] == 0 and preview["cost"]["leakage_bits"] == 0
    assert (public(api), spent(api)) == written
    twin_job(api)
    twin_job(api)
    refused = api.post_job(target="twin", metrics=["accuracy"])
    assert refused.status_code == 429 and refused.json()["error"] == "twin_quota_exhausted"
    assert refused.headers["Retry-After"] and any("evalgate dev run" in a for a in refused.json()["alternatives"])
    preview = api.client.post("/v1/jobs", headers=api.partner, params={"dry_run": "true"}, json=twin_body()).json()
    assert preview["admitted"] is False and preview["twin_jobs_left"] == 0
    assert preview["refusal"]["error"] == "twin_quota_exhausted"
    # The real budgets are another matter: once the twin jobs have ended, a real job is admitted as before.
    for job in api.client.get("/v1/jobs", headers=api.partner).json()["jobs"]:
        api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.partner)
    assert api.post_job(metrics=["accuracy"]).status_code == 202


def test_a_twin_job_and_a_real_job_of_one_partner_never_run_at_once(api, demo_files):
    """A twin job's output is its partner's: a real job of the partner running beside it could signal
    to it through the host they share. So each is refused while the other is unfinished, the real job
    judged as its partner sees it (until its padded time), so the refusal tells the partner nothing."""
    api.settings.timing_buckets_s = [600.0]
    twin = twin_job(api)
    refused = api.post_job(metrics=["accuracy"])
    assert refused.status_code == 409 and refused.json()["error"] == "twin_job_in_progress"
    assert any(f"/v1/jobs/{twin['id']}/cancel" in a for a in refused.json()["alternatives"])
    preview = api.client.post("/v1/jobs", headers=api.partner, params={"dry_run": "true"}, json=factories.job_spec())
    assert preview.json()["admitted"] is False and preview.json()["refusal"]["error"] == "twin_job_in_progress"
    assert api.post_job(api.other, metrics=["accuracy"]).status_code == 202  # another partner's are its own

    assert runner.run_job(context(api, StubSandbox(crashed_outcome(TRACEBACK))), twin["id"]) == JobState.FAILED
    real = api.post_job(metrics=["accuracy"])
    assert real.status_code == 202, real.text
    assert runner.run_job(context(api, StubSandbox(crashed_outcome(TRACEBACK))), real.json()["id"]) == JobState.FAILED
    # It really ended, but its partner sees it running until its padded time: so is a twin job refused.
    refused = api.post_job(target="twin", metrics=["accuracy"])
    assert refused.status_code == 409 and refused.json()["error"] == "real_job_in_progress"
    preview = api.client.post("/v1/jobs", headers=api.partner, params={"dry_run": "true"}, json=twin_body()).json()
    assert preview["admitted"] is False and preview["refusal"]["error"] == "real_job_in_progress"
    past_its_padding(api, real.json()["id"])
    assert api.client.get(f"/v1/jobs/{real.json()['id']}", headers=api.partner).json()["state"] == "failed"
    assert api.post_job(target="twin", metrics=["accuracy"]).status_code == 202


def twin_body() -> dict:
    return factories.job_spec(metrics=["accuracy"], target="twin")


def test_a_twin_job_is_refused_as_its_real_job_would_be(api):
    r = api.post_job(target="twin", metrics=["no_such_metric"])
    assert r.status_code == 422 and r.json()["error"] == "undeclared_metric", r.text
    r = api.post_job(target="twin", model="nope@1")
    assert r.status_code == 404, r.text


@pytest.mark.parametrize("view", ["partner", "operator"])
def test_a_twin_job_is_listed_with_its_target(api, view):
    job = twin_job(api)
    jobs = api.client.get("/v1/jobs", headers=getattr(api, view)).json()["jobs"]
    assert [j["target"] for j in jobs if j["id"] == job["id"]] == ["twin"]


def test_a_twin_job_without_a_twin_is_refused_plainly(api):
    with api.db() as s:
        for row in s.execute(select(Twin)).scalars():
            s.delete(row)
    r = api.post_job(target="twin", metrics=["accuracy"])
    assert r.status_code == 404 and r.json()["error"] == "twin_not_available", r.text
