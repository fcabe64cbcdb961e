"""Sanctions: hard-rule trips per partner per UTC day past the partner's limit suspend it; new
submissions get 403 `partner_suspended` with the reason until an operator lifts it with a reason."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import pytest

from service.db import session_scope, utcnow
from service.jobs import runner
from service.ledger import service as ledger
from service.quotas import leakage
from service.release import timing
from service.release.outcomes import ErrorClass
from service.sanctions import repository as repo
from service.sanctions import service as sanctions
from service.sanctions.models import Rule
from service.sandbox.spec import Outcome
from tests import factories
from tests.harness import Harness
from tests.site.pages import sign_in
from tests.stubs import StubSandbox, context, released_outcome

PARTNER = "/v1/policies/partners/acme"
SUSPENSION = "/v1/partners/acme/suspension"


def change(api: Harness, **body: Any) -> None:
    r = api.client.get(PARTNER, headers=api.operator)
    merged = {k: v for k, v in r.json()["set"].items() if v is not None} | body
    r = api.client.put(PARTNER, headers=api.operator | {"If-Match": r.headers["ETag"]}, json={"reason": "t", **merged})
    assert r.status_code == 200, r.text


def rejected() -> Outcome:
    """A run whose result the sandbox refused to read (a link, say): the gate rejects the output."""
    return Outcome(exit_code=0, result=None, result_problem="the result is a symlink", usage={"rows": 10})


METRICS = ["accuracy", "macro_f1", "log_loss", "ece", "misclassified", "balanced_accuracy"]


def submit(api: Harness, headers: dict[str, str] | None = None, i: int = 0):
    """A new job (another release for each `i`: asking the same again would return the earlier job)."""
    return api.post_job(headers, metrics=[METRICS[i]], resources={"query_budget": 100})


def test_rejected_outputs_suspend_the_partner_from_their_padded_time_until_an_operator_lifts_it(api):
    api.settings.timing_buckets_s = [2.0]
    change(api, hard_rule_trips_per_day=2)
    jobs = [submit(api, i=i).json()["id"] for i in range(2)]
    runner.run_job(context(api, StubSandbox(rejected(), rejected())), jobs[0])
    runner.run_job(context(api, StubSandbox(rejected())), jobs[1])
    # Before the padded time the partner cannot see how its jobs ended, so neither may a suspension.
    assert submit(api, i=2).status_code == 202
    assert api.client.get(SUSPENSION, headers=api.operator).json()["suspended"] is False
    time.sleep(2.1)
    r = submit(api, i=3)
    assert r.status_code == 403 and r.json()["error"] == "partner_suspended"
    assert "output_rejected: 2" in r.json()["detail"] and r.json()["alternatives"]
    assert submit(api, headers=api.other).status_code == 202  # another partner is not touched
    found = api.client.get(SUSPENSION, headers=api.operator).json()
    assert found["suspended"] and found["trips_today"] == {"output_rejected": 2} and found["limit"] == 2
    with api.db() as s:
        actions = [e["action"] for e in ledger.events_for(s, "principal:acme")]
    assert actions.count("partner.suspended") == 1

    r = api.client.post(f"{SUSPENSION}/lift", headers=api.operator, json={"reason": "a bug in their suite, fixed"})
    assert r.status_code == 200 and r.json()["suspended"] is False and r.json()["trips_today"] == {}
    assert r.json()["history"][0]["lift_reason"] == "a bug in their suite, fixed"
    assert submit(api, i=4).status_code == 202  # the trips before the lift no longer count
    again = api.client.post(f"{SUSPENSION}/lift", headers=api.operator, json={"reason": "again"})
    assert again.status_code == 409 and again.json()["error"] == "partner_not_suspended"


def test_a_job_that_abused_the_model_channel_is_a_trip_even_when_it_released(api, demo_files):
    """The sidecar counts frames and ops the SDK never sends (its usage report); one such job is one
    trip (not one per frame), whatever the job's ending, on the twin as on the real versions."""
    change(api, hard_rule_trips_per_day=2)
    abusive = released_outcome(demo_files["data"])
    abusive.usage = {**abusive.usage, "protocol_errors": 7}
    jobs = [submit(api, i=i).json()["id"] for i in range(2)]
    runner.run_job(context(api, StubSandbox(abusive)), jobs[0])
    clean = released_outcome(demo_files["data"])
    runner.run_job(context(api, StubSandbox(clean)), jobs[1])
    time.sleep(api.settings.timing_buckets_s[0] + 0.05)
    seen = api.client.get(f"/v1/jobs/{jobs[0]}", headers=api.partner).json()
    assert seen["state"] == "released"  # the result stands; the abuse is counted apart
    found = api.client.get(SUSPENSION, headers=api.operator).json()
    assert found["trips_today"] == {"protocol_abuse": 1} and not found["suspended"]
    twin = api.post_job(metrics=["accuracy"], target="twin").json()["id"]
    runner.run_job(context(api, StubSandbox(abusive)), twin)
    time.sleep(api.settings.timing_buckets_s[0] + 0.05)
    r = submit(api, i=2)
    assert r.status_code == 403 and r.json()["error"] == "partner_suspended"
    assert "protocol_abuse: 2" in r.json()["detail"]


def test_what_a_job_is_charged_counts_its_channel_trip_beside_its_ending(api):
    """The trip above is taken whatever the job's ending, and its partner learns of it (a later
    refusal names it): the bits a job reserves count each ending with and without it."""
    durations = timing.distinct_durations(api.settings.timing_buckets_s, api.settings.longest_job_s)
    endings = len(ErrorClass) + 1  # released, or one of the error classes
    assert leakage.outcome_bits(api.settings) == pytest.approx(math.log2(endings * 2) + math.log2(durations))
    job = submit(api).json()
    assert job["spec"]["leakage_bits"] >= math.log2(endings * 2) + math.log2(durations)


def test_repeated_budget_exhaustion_suspends_at_the_refusal_that_passes_the_limit(api):
    change(api, hard_rule_trips_per_day=3, rows_per_day=100)
    assert submit(api).status_code == 202
    codes = [submit(api, i=i + 1).json()["error"] for i in range(4)]
    assert codes == ["daily_query_budget_exhausted"] * 3 + ["partner_suspended"]
    found = api.client.get(SUSPENSION, headers=api.operator).json()
    assert found["suspended"] and found["trips_today"] == {"budget_exhausted": 3}
    # The console's partners page says so, with the reason and today's trips against the limit.
    sign_in(api.client, api.operator)
    row = next(r for r in api.client.get("/site/console/").text.split("<tr>") if '<th scope="row">acme' in r)
    assert "Suspended" in row and "hard-rule trips today: 3 of 3" in row and found["reason"] in row


def test_a_partners_own_limit_and_who_may_see_and_lift(api):
    for who in (api.partner, api.researcher):
        assert api.client.get(SUSPENSION, headers=who).status_code == 403
        assert api.client.post(f"{SUSPENSION}/lift", headers=who, json={"reason": "x"}).status_code == 403
    r = api.client.get("/v1/partners/nobody/suspension", headers=api.operator)
    assert r.status_code == 404 and r.json()["error"] == "sanction_subject_not_found"
    r = api.client.post(f"{SUSPENSION}/lift", headers=api.operator, json={"reason": "  "})
    assert r.status_code == 422 and r.json()["error"] == "reason_required"
    assert api.client.get(SUSPENSION, headers=api.operator).json()["limit"] == api.settings.hard_rule_trips_per_day
    change(api, hard_rule_trips_per_day=7)
    assert api.client.get(SUSPENSION, headers=api.operator).json()["limit"] == 7
    assert api.client.get(PARTNER, headers=api.partner).json()["limits"]["hard_rule_trips_per_day"] == 7


def test_only_todays_trips_that_the_partner_can_see_count(sessions, db_settings):
    with session_scope(sessions) as s:
        pid, _ = factories.principal(s, "acme", "partner")
        now = utcnow()
        repo.add_trip(s, pid, Rule.OUTPUT_REJECTED, "job:old", now - timedelta(days=1, minutes=1))
        repo.add_trip(s, pid, Rule.OUTPUT_REJECTED, "job:later", now + timedelta(minutes=5))  # padded, not yet
        repo.add_trip(s, pid, Rule.QUERY_BUDGET_EXCEEDED, "job:now", now - timedelta(seconds=1))
        found = sanctions.read(s, db_settings, "acme")
        assert found.trips_today == {"query_budget_exceeded": 1} and not found.suspended
        db_settings.hard_rule_trips_per_day = 1
        assert sanctions.read(s, db_settings, "acme").suspended
        sanctions.lift(s, db_settings, "acme", "reviewed", "operator:ops")
        assert sanctions.read(s, db_settings, "acme").trips_today == {}
        sanctions.check(s, db_settings, pid, "acme")  # admitted again: raises nothing
