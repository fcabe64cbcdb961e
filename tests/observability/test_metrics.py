"""GET /metrics, parsed as Prometheus parses it: the counters move when a job runs to its end (the real
API admits it, the worker's own task runs it on a stub sandbox), the gauges read the queue and the
budgets from the database, routes are labelled by template, and only operators can read any of it."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.jobs import tasks
from service.jobs.context import LazyContext
from service.jobs.models import Job
from service.ledger import service as ledger
from service.sandbox.spec import Outcome
from tests.stubs import StubSandbox, context, released_outcome

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api) -> Samples:
    r = api.client.get("/metrics", headers=api.operator)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def TIMED(demo_files) -> Outcome:
    """A good run whose sandbox reports how long it took to start and to run."""
    return dataclasses.replace(released_outcome(demo_files["data"]), timings={"start": 0.2, "run": 0.5})


def run_on_worker(api, monkeypatch, job_id: str, sandbox: StubSandbox) -> str | None:
    """The Celery task itself (service.jobs.tasks.run), on a worker context with the stub sandbox."""
    ctx = context(api, sandbox)
    monkeypatch.setattr(tasks, "_context", LazyContext(lambda: ctx))
    return tasks.run(job_id)  # type: ignore[no-any-return]


def test_counters_move_when_a_job_runs_to_its_end(api, monkeypatch, TIMED):
    before = scrape(api)
    refused = api.post_job(metrics=["no_such_metric"])
    assert refused.status_code == 422, refused.text
    code = refused.json()["error"]
    r = api.post_job(metrics=["accuracy"], resources={"query_budget": 1000})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    queued = scrape(api)
    assert value(queued, "evalgate_queue_depth") == 1
    assert value(queued, "evalgate_jobs", state="queued") == 1
    assert value(queued, "evalgate_queue_oldest_age_seconds") >= 0
    assert value(queued, "evalgate_partner_budget_used", partner="acme", resource="jobs_in_progress") == 1
    assert value(queued, "evalgate_partner_budget_used", partner="acme", resource="model_rows_today") == 1000
    assert value(queued, "evalgate_partner_budget_limit", partner="acme", resource="jobs_in_progress") == (
        api.settings.max_concurrent_jobs
    )
    assert value(queued, "evalgate_partner_budget_used", partner="globex", resource="jobs_in_progress") == 0

    assert run_on_worker(api, monkeypatch, job_id, StubSandbox(TIMED)) == "released"
    after = scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("evalgate_jobs_submitted_total") == 2
    assert moved("evalgate_jobs_admitted_total") == 1
    assert moved("evalgate_jobs_refused_total", code=code) == 1
    assert moved("evalgate_jobs_ended_total", state="released", error_class="none") == 1
    assert moved("evalgate_model_rows_served_total") == 600
    assert moved("evalgate_gate_outcomes_total", outcome="released") == 1
    for phase in ("queued", "sandbox_start", "run", "gate"):
        assert moved("evalgate_job_phase_seconds_count", phase=phase) == 1, phase
    assert moved("evalgate_job_phase_seconds_sum", phase="sandbox_start") == pytest.approx(0.2)
    assert moved("evalgate_http_request_duration_seconds_count", method="POST", route="/v1/jobs", status="202") == 1
    assert moved("evalgate_http_request_duration_seconds_count", method="POST", route="/v1/jobs", status="422") == 1
    assert value(after, "evalgate_queue_depth") == 0 and value(after, "evalgate_jobs", state="queued") == 0


def test_a_job_that_fails_is_counted_by_its_error_class(api, monkeypatch):
    before = scrape(api)
    job_id = api.post_job(metrics=["accuracy"]).json()["id"]
    crashed = Outcome(exit_code=137, usage={"rows": 10}, images={"job": "j", "sidecar": "s"})
    assert run_on_worker(api, monkeypatch, job_id, StubSandbox(crashed)) == "failed"
    after = scrape(api)
    with api.db() as s:
        error_class = s.get(Job, job_id).error_class
    ended = {"state": "failed", "error_class": error_class}
    assert value(after, "evalgate_jobs_ended_total", **ended) - value(before, "evalgate_jobs_ended_total", **ended) == 1
    released = {"state": "released", "error_class": "none"}
    assert value(after, "evalgate_jobs_ended_total", **released) == value(
        before, "evalgate_jobs_ended_total", **released
    )
    assert value(after, "evalgate_model_rows_served_total") - value(before, "evalgate_model_rows_served_total") == 10


def test_only_what_commits_is_counted(api):
    refused = {"code": "a_test_code"}
    before = scrape(api)
    for commit in (False, True, False):
        with api.client.app.state.sessionmaker() as s:
            ledger.append(
                s, actor="test", action="job.refused", subject="principal:acme", data={"reason": "a_test_code"}
            )
            s.commit() if commit else s.rollback()
    after = scrape(api)
    assert (
        value(after, "evalgate_jobs_refused_total", **refused) - value(before, "evalgate_jobs_refused_total", **refused)
        == 1
    )


@pytest.mark.parametrize(
    ("action", "data", "outcome", "withheld"),
    [
        ("result.released", {"disclosure": {"suppressed": []}}, "released", 0),
        ("result.released", {"disclosure": {"suppressed": [{"metric": "a"}, {"metric": "b"}]}}, "withheld", 2),
        ("job.transition", {"from": "gating", "to": "rejected", "error_class": "output_rejected"}, "rejected", 0),
    ],
)
def test_gate_outcomes(api, action, data, outcome, withheld):
    before = scrape(api)
    with api.db() as s:
        ledger.append(s, actor="test", action=action, subject=f"job:{uuid.uuid4()}", data=data)
    after = scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("evalgate_gate_outcomes_total", outcome=outcome) == 1
    assert moved("evalgate_gate_metrics_withheld_total") == withheld


def test_routes_are_labelled_by_template_never_by_raw_path(api):
    unknown = str(uuid.uuid4())
    before = scrape(api)
    assert api.client.get(f"/v1/jobs/{unknown}", headers=api.partner).status_code == 404
    assert api.client.get(f"/no/such/{unknown}", headers=api.partner).status_code == 404
    assert api.client.get(f"/v1/jobs/{unknown}").status_code == 401  # refused by ingress, before routing
    assert api.client.request(f"BREW{unknown[:8]}", "/healthz").status_code == 405
    after = scrape(api)
    assert unknown not in api.client.get("/metrics", headers=api.operator).text
    requests = "evalgate_http_request_duration_seconds_count"
    for method, route, status in (
        ("GET", "/v1/jobs/{job_id}", "404"),
        ("GET", "/v1/jobs/{job_id}", "401"),
        ("GET", "unmatched", "404"),
        ("other", "/healthz", "405"),  # a method is a label only if it is one of HTTP's
    ):
        labels = {"method": method, "route": route, "status": status}
        assert value(after, requests, **labels) - value(before, requests, **labels) == 1, labels


def test_only_operators_can_read_metrics(api):
    api.post_job(metrics=["accuracy"])  # so there is per-partner data to leak
    for headers, status in ((api.partner, 403), (api.other, 403), (api.researcher, 403), ({}, 401)):
        r = api.client.get("/metrics", headers=headers)
        assert r.status_code == status, r.text
        assert r.json()["error"] in ("wrong_role", "unauthorized", "missing_key") or r.status_code == 401
        assert "acme" not in r.text and "evalgate_" not in r.text
    assert "acme" in api.client.get("/metrics", headers=api.operator).text
