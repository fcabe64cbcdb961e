"""Leases and the reconciler, on the real database (SQLite and Postgres) without Docker: the claim
is exclusive, renewals notice a claim that was taken, and a job committed but never handed to a
worker (a lost message) is handed over again, once, and only when it is really lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from service.db import utcnow
from service.jobs.leases import Leases
from service.jobs.models import Job
from service.jobs.recovery import Recovery
from service.jobs.states import JobState


def queued(api, metric: str = "accuracy") -> str:
    r = api.post_job(metrics=[metric], resources={"query_budget": 1000})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def set_job(api, job_id: str, **values) -> None:
    with api.db() as s:
        job = s.get(Job, job_id)
        for k, v in values.items():
            setattr(job, k, v)


MADE: list[Leases] = []


def leases(api, owner: str) -> Leases:
    made = Leases(api.client.app.state.sessionmaker, api.settings.lease_s, owner=owner)
    MADE.append(made)
    return made


@pytest.fixture(autouse=True)
def _stop_renewing() -> Iterator[None]:
    """A test's leases stop renewing when it ends (its database goes with it)."""
    yield
    while MADE:
        MADE.pop().close()


class Broker:
    """Stands for the broker's queue: what it holds, and what was sent."""

    def __init__(self, holding: set[str] = frozenset()):  # type: ignore[assignment]
        self.holding, self.sent, self.twins = set(holding), [], []

    def enqueue(self, job_id: str, twin: bool = False) -> None:
        self.sent.append(job_id)
        if twin:
            self.twins.append(job_id)

    def waiting(self) -> set[str]:
        return self.holding

    def close(self) -> None:
        pass


def recovery(api, broker: Broker) -> Recovery:
    state = api.client.app.state
    return Recovery(api.settings, state.sessionmaker, state.budgets, broker)


def test_a_claim_is_exclusive_renewed_and_noticed_when_taken(api):
    job_id = queued(api)
    a, b = leases(api, "worker-a"), leases(api, "worker-b")
    assert a.claim(job_id) and not b.claim(job_id) and not a.claim(job_id)  # nor twice in one process
    with api.db() as s:
        first = s.get(Job, job_id).lease_expires_at
    set_job(api, job_id, lease_expires_at=first - timedelta(seconds=5))
    a.renew()
    with api.db() as s:
        assert s.get(Job, job_id).lease_expires_at > first - timedelta(seconds=1) and a.holds(job_id)
    set_job(api, job_id, lease_owner="worker-b")  # the reaper, then another worker, took it
    a.renew()
    assert not a.holds(job_id)
    a.let_go(job_id)
    with api.db() as s:
        assert s.get(Job, job_id).lease_owner == "worker-b"  # another's claim is not cleared


def test_a_claim_needs_a_runnable_job(api):
    job_id = queued(api)
    set_job(api, job_id, state=JobState.AWAITING_APPROVAL)
    assert not leases(api, "w").claim(job_id) and not leases(api, "w").claim("no-such-job")


def test_a_job_whose_message_was_lost_is_handed_over_again_once_it_is_old_enough(api):
    lost, waiting, held = queued(api), queued(api, "macro_f1"), queued(api, "log_loss")
    broker = Broker(holding={waiting})
    assert leases(api, "w").claim(held)
    assert recovery(api, broker).reconcile() == []  # just committed: the API hands them over itself
    old = utcnow() - timedelta(seconds=api.settings.reconcile_after_s + 1)
    for job_id in (lost, waiting, held):
        set_job(api, job_id, updated_at=old)
    assert recovery(api, broker).reconcile() == [lost] and broker.sent == [lost]
    broker.holding.add(lost)  # the message is in the queue now
    assert recovery(api, broker).reconcile() == []


def test_a_lost_twin_job_is_handed_over_to_the_twin_lane(api):
    real = queued(api)
    twin = api.post_job(api.other, target="twin", metrics=["accuracy"]).json()["id"]
    for job_id in (twin, real):
        set_job(api, job_id, updated_at=utcnow() - timedelta(hours=1))
    broker = Broker()
    assert sorted(recovery(api, broker).reconcile()) == sorted([twin, real])
    assert broker.twins == [twin]


def test_a_job_in_the_gate_that_no_worker_holds_is_handed_over_too(api):
    job_id = queued(api)
    set_job(api, job_id, state=JobState.GATING, updated_at=utcnow() - timedelta(hours=1))
    broker = Broker()
    assert recovery(api, broker).reconcile(older_than_s=0) == [job_id]


def test_the_reaper_hands_a_queued_job_whose_worker_died_before_it_started_back(api):
    job_id = queued(api)
    assert leases(api, "dead").claim(job_id)
    set_job(api, job_id, lease_expires_at=utcnow() - timedelta(seconds=api.settings.lease_s))
    broker = Broker()
    assert recovery(api, broker).reap() == {job_id: JobState.QUEUED} and broker.sent == [job_id]
    with api.db() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.lease_owner, job.lease_expires_at) == (JobState.QUEUED, None, None)
    assert leases(api, "alive").claim(job_id)  # free for the next worker
