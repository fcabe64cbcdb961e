import pytest

from service.db import session_scope
from service.errors import Conflict
from service.jobs.models import Job
from service.jobs.states import TERMINAL, TRANSITIONS, transition
from service.ledger import service as ledger

SPEC = {
    "suite": "classification@1.1.0",
    "model": "demo-classifier@1",
    "dataset": "demo-blobs@1",
    "metrics": ["accuracy"],
}


def new_job(api) -> str:
    r = api.client.post("/v1/jobs", headers=api.partner, json=SPEC)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_happy_path_is_audited_and_idempotent(api):
    job_id = new_job(api)
    with session_scope(api.sessions) as s:
        job = s.get(Job, job_id)
        assert job.state == "queued"
        assert transition(s, job, "running", actor="t") is True
        assert transition(s, job, "running", actor="t") is False  # a redelivered task may say it again
        assert job.started_at is not None
        transition(s, job, "gating", actor="t")
        transition(s, job, "released", actor="t")
        assert job.finished_at is not None and job.error_class is None
        moves = [
            (e["data"]["from"], e["data"]["to"])
            for e in ledger.events_for(s, f"job:{job_id}")
            if e["action"] == "job.transition"
        ]
    assert moves == [("submitted", "queued"), ("queued", "running"), ("running", "gating"), ("gating", "released")]


@pytest.mark.parametrize("frm", sorted(TERMINAL))
def test_terminal_states_are_final(api, frm):
    job_id = new_job(api)
    with session_scope(api.sessions) as s:
        job = s.get(Job, job_id)
        job.state = frm
        for to in ("queued", "running", "gating", "released"):
            if to != frm:
                with pytest.raises(Conflict):
                    transition(s, job, to, actor="t")


def test_no_release_without_the_gate(api):
    job_id = new_job(api)
    with session_scope(api.sessions) as s:
        job = s.get(Job, job_id)
        transition(s, job, "running", actor="t")
        with pytest.raises(Conflict):
            transition(s, job, "released", actor="t")
        with pytest.raises(Conflict):
            transition(s, job, "rejected", actor="t", error_class="output_rejected")


def test_every_edge_target_is_a_known_state():
    states = set(TRANSITIONS) | TERMINAL
    assert all(t <= states for t in TRANSITIONS.values())
