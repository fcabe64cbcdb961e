"""The job state machine: every move checked and on the ledger, endings final and settled."""

import time

import pytest

from service.jobs.models import Job
from service.jobs.service import InvalidTransition, end, transition
from service.jobs.states import ENDS, RUNNABLE, TERMINAL, TRANSITIONS, JobState, end_state
from service.ledger import service as ledger
from service.quotas.models import BudgetReservation
from service.release.outcomes import ErrorClass


def new_job(api) -> str:
    r = api.post_job()
    assert r.status_code == 202, r.text
    return r.json()["id"]


def budgets(api):
    return api.client.app.state.budgets


def test_happy_path_is_audited_idempotent_and_settles_once(api):
    job_id = new_job(api)
    with api.db() as s:
        job = s.get(Job, job_id)
        assert job.state == JobState.QUEUED
        assert transition(s, job, JobState.RUNNING, actor="t") is True
        assert transition(s, job, JobState.RUNNING, actor="t") is False  # a redelivered task may say it again
        assert job.started_at is not None
        transition(s, job, JobState.GATING, actor="t")
        assert end(s, budgets(api), job, None, actor="t") == JobState.RELEASED
        assert end(s, budgets(api), job, ErrorClass.CRASHED, actor="t") == JobState.RELEASED  # an ending is final
        assert job.finished_at is not None and job.error_class is None
        assert s.get(BudgetReservation, job_id).ended is True
    time.sleep(api.settings.timing_buckets_s[0])  # what the ending gives back moves at its padded time
    with api.db() as s:
        api.client.app.state.budgets.apply_due(s, None)
        assert s.get(BudgetReservation, job_id).settled is True
        events = ledger.events_for(s, f"job:{job_id}")
    moves = [(e["data"]["from"], e["data"]["to"]) for e in events if e["action"] == "job.transition"]
    assert moves == [("submitted", "queued"), ("queued", "running"), ("running", "gating"), ("gating", "released")]
    assert [e["action"] for e in events].count("leakage.bits_settled") == 1


@pytest.mark.parametrize("frm", sorted(TERMINAL))
def test_terminal_states_are_final(api, frm):
    job_id = new_job(api)
    with api.db() as s:
        job = s.get(Job, job_id)
        job.state = frm
        for to in (JobState.QUEUED, JobState.RUNNING, JobState.GATING):
            with pytest.raises(InvalidTransition):
                transition(s, job, to, actor="t")


def test_no_release_without_the_gate_and_no_ending_without_settling(api):
    job_id = new_job(api)
    with api.db() as s:
        job = s.get(Job, job_id)
        transition(s, job, JobState.RUNNING, actor="t")
        with pytest.raises(InvalidTransition):
            end(s, budgets(api), job, None, actor="t")  # running → released skips the gate
        with pytest.raises(InvalidTransition):
            transition(s, job, JobState.REJECTED, actor="t")  # an ending only through end()


def test_every_error_class_ends_in_one_terminal_state():
    assert set(ENDS) == set(ErrorClass)
    # ... a reproduction's run that was compared ends `compared` (service.reproductions), and a twin job
    # the gate would release ends `judged` (service.jobs.twin).
    ends = {end_state(None), end_state(None, reproduction=True), end_state(None, twin=True)}
    assert {end_state(c) for c in ErrorClass} | ends == TERMINAL
    assert end_state(None, reproduction=True) == JobState.COMPARED and end_state(None) == JobState.RELEASED
    assert end_state(None, twin=True) == JobState.JUDGED
    assert all(end_state(c, twin=True) == end_state(c) for c in ErrorClass)  # failing on a twin is failing
    states = set(TRANSITIONS) | TERMINAL
    assert states == set(JobState)
    assert all(t <= states for t in TRANSITIONS.values())
    assert set(TRANSITIONS) >= RUNNABLE
