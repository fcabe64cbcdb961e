"""Every branch of the worker's state machine, with a stub sandbox (no Docker): the real API admits
the jobs, the real runner runs them on the real database and budgets."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.db import utcnow
from service.jobs import runner
from service.jobs.models import Job
from service.jobs.recovery import Recovery
from service.jobs.states import JobState
from service.quotas.models import BudgetReservation
from service.release import service as release_service
from service.release.models import Result
from service.release.outcomes import ErrorClass
from service.sandbox.errors import ImageMissing, SandboxError
from service.sandbox.spec import Outcome
from tests.stubs import StubSandbox, context, released_outcome


@pytest.fixture(scope="module")
def GOOD(demo_files) -> Outcome:
    return released_outcome(demo_files["data"])


class WorkerDied(BaseException):
    """Stands for kill -9: nothing after it runs, no handler sees it."""


def queued(api, metric: str = "accuracy") -> str:
    r = api.post_job(metrics=[metric], resources={"query_budget": 1000})
    assert r.status_code == 202 and r.json()["state"] == "running", r.text
    return r.json()["id"]


def row(api, job_id: str) -> tuple[Job, BudgetReservation, Result | None]:
    with api.db() as s:
        return s.get(Job, job_id), s.get(BudgetReservation, job_id), release_service.existing(s, job_id)


def set_job(api, job_id: str, **values) -> None:
    with api.db() as s:
        job = s.get(Job, job_id)
        for k, v in values.items():
            setattr(job, k, v)


def test_queued_job_runs_to_a_signed_release_and_settles_once(api, GOOD):
    job_id, sandbox = queued(api), StubSandbox(GOOD)
    assert runner.run_job(context(api, sandbox), job_id) == JobState.RELEASED
    job, reservation, result = row(api, job_id)
    assert result.metrics == {"accuracy": 0.8333} and "queries" not in result.provenance  # the job's choice
    assert job.outcome["usage"]["rows"] == 600  # kept for operators
    assert len(sandbox.runs) == 1 and sandbox.runs[0].query_budget_rows == 1000
    assert sandbox.removed.count(job_id) >= 1
    assert (reservation.ended, reservation.ran, reservation.rows_used) == (True, True, 600)
    assert job.attempts == 1 and job.result_raw is None  # pre-noise values are not kept
    assert runner.run_job(context(api, StubSandbox()), job_id) == JobState.RELEASED  # redelivered: nothing again


def expire_lease(api, job_id: str) -> None:
    """As if the worker holding the job stopped renewing its claim a lease and a half ago."""
    set_job(api, job_id, lease_expires_at=utcnow() - timedelta(seconds=api.settings.lease_s * 1.5))


def reaper(api, sandbox: StubSandbox | None = None) -> Recovery:
    state = api.client.app.state
    return Recovery(
        api.settings,
        state.sessionmaker,
        state.budgets,
        api.dispatcher,
        remove=(sandbox or StubSandbox()).remove,
    )


def test_a_job_left_running_by_a_dead_worker_is_ended_by_the_reaper_and_stays_charged(api, GOOD):
    job_id = queued(api)
    dead = context(api, StubSandbox(WorkerDied()))
    with pytest.raises(WorkerDied):
        runner.run_job(dead, job_id)
    job = row(api, job_id)[0]
    assert job.state == JobState.RUNNING and job.lease_owner == dead.leases.owner
    other = StubSandbox(GOOD)  # a redelivery to another worker while the claim holds: it steps aside
    assert runner.run_job(context(api, other), job_id) == JobState.RUNNING
    assert other.runs == [] and row(api, job_id)[0].attempts == 1
    sandbox = StubSandbox()
    assert reaper(api, sandbox).reap() == {}  # the claim has not run out yet
    expire_lease(api, job_id)
    assert reaper(api, sandbox).reap() == {job_id: JobState.FAILED}
    job, reservation, result = row(api, job_id)
    assert job.error_class == ErrorClass.INTERNAL_ERROR and "stopped renewing its lease" in job.operator_log
    # Its code ran, and the sidecar that counted its queries is gone: nothing is given back.
    assert (reservation.ended, reservation.ran) == (True, True) and result is None
    assert sandbox.removed == [job_id] and job.lease_owner is None
    assert reaper(api, sandbox).reap() == {}  # a second reaper finds nothing to do
    expired = [e["data"] for e in api.events(job_id) if e["action"] == "job.lease_expired"]
    assert [(e["owner"], e["state"]) for e in expired] == [(dead.leases.owner, "running")]


def test_crash_inside_gating_is_judged_again_from_the_recorded_outcome(api, monkeypatch, GOOD):
    job_id, sandbox = queued(api), StubSandbox(GOOD)

    def die(*args, **kwargs):
        raise WorkerDied()

    monkeypatch.setattr(release_service, "conclude", die)
    with pytest.raises(WorkerDied):
        runner.run_job(context(api, sandbox), job_id)
    job, reservation, result = row(api, job_id)
    assert job.state == JobState.GATING and job.outcome["usage"]["rows"] == 600 and job.result_raw is not None
    assert result is None and not reservation.ended
    monkeypatch.undo()
    expire_lease(api, job_id)
    assert reaper(api).reap() == {job_id: JobState.GATING}
    assert api.dispatcher.enqueued[-1] == (job_id, JobState.GATING)  # handed to a worker again
    again = StubSandbox()  # no sandbox run is needed for a job in the gate
    assert runner.run_job(context(api, again), job_id) == JobState.RELEASED
    assert again.runs == [] and row(api, job_id)[2].metrics == {"accuracy": 0.8333}


def test_two_workers_handed_the_same_job_one_runs_it_and_the_other_steps_aside(api, GOOD):
    job_id = queued(api)
    second = StubSandbox(GOOD)
    seen = []

    class First(StubSandbox):
        def run(self, spec, should_cancel=lambda: False):  # type: ignore[no-untyped-def]
            seen.append(runner.run_job(context(api, second), job_id))  # the redelivery, meanwhile
            return super().run(spec, should_cancel)

    first = First(GOOD)
    assert runner.run_job(context(api, first), job_id) == JobState.RELEASED
    assert seen == [JobState.RUNNING] and second.runs == [] and len(first.runs) == 1
    with api.db() as s:
        ends = [e for e in api.events(job_id) if e["action"] == "job.transition" and e["data"]["to"] == "released"]
        assert len(ends) == 1 and s.get(Job, job_id).attempts == 1


def test_a_worker_whose_claim_was_taken_records_nothing_and_stops_its_sandbox(api, GOOD):
    """Cut off from the database for longer than a lease: the reaper ended the job meanwhile, and the
    worker's sandbox is told to stop; what it returns afterwards is not recorded."""
    job_id = queued(api)
    stops = []

    class Slow(StubSandbox):
        def run(self, spec, should_cancel=lambda: False):  # type: ignore[no-untyped-def]
            expire_lease(api, job_id)
            assert reaper(api).reap() == {job_id: JobState.FAILED}
            ctx.leases.renew()  # the next renewal finds the claim gone
            stops.append(should_cancel())
            return super().run(spec, should_cancel)

    ctx = context(api, Slow(GOOD))
    assert runner.run_job(ctx, job_id) == JobState.FAILED
    job, reservation, result = row(api, job_id)
    assert stops == [True] and job.outcome is None and result is None
    assert job.error_class == ErrorClass.INTERNAL_ERROR and reservation.ran is True


def test_a_claim_taken_by_another_worker_mid_run_leaves_the_job_to_it(api, GOOD):
    job_id = queued(api)

    class Robbed(StubSandbox):
        def run(self, spec, should_cancel=lambda: False):  # type: ignore[no-untyped-def]
            set_job(api, job_id, lease_owner="another-worker")
            return super().run(spec, should_cancel)

    assert runner.run_job(context(api, Robbed(GOOD)), job_id) == JobState.RUNNING
    job = row(api, job_id)[0]
    assert job.outcome is None and job.lease_owner == "another-worker"  # nothing recorded, not cleared


def test_an_error_inside_gating_fails_the_job_and_releases_nothing(api, monkeypatch, GOOD):
    job_id = queued(api)

    def broken(*args, **kwargs):
        raise ValueError("a bug in the gate")

    monkeypatch.setattr(release_service, "conclude", broken)
    assert runner.run_job(context(api, StubSandbox(GOOD)), job_id) == JobState.FAILED
    job, reservation, result = row(api, job_id)
    assert job.error_class == ErrorClass.INTERNAL_ERROR and "a bug in the gate" in job.operator_log
    assert result is None and (reservation.ended, reservation.ran) == (True, True)


def test_a_job_delivered_more_than_the_allowed_attempts_fails_without_running(api, GOOD):
    job_id = queued(api)
    set_job(api, job_id, attempts=runner.MAX_ATTEMPTS)
    sandbox = StubSandbox(GOOD)
    assert runner.run_job(context(api, sandbox), job_id) == JobState.FAILED
    job, reservation, _ = row(api, job_id)
    assert job.error_class == ErrorClass.INTERNAL_ERROR and "gave up" in job.operator_log
    assert sandbox.runs == [] and reservation.ended and reservation.ran is False  # it never started


def test_cancel_before_start_gives_back_everything(api, GOOD):
    job_id = queued(api)
    set_job(api, job_id, cancel_requested=True)
    sandbox = StubSandbox(GOOD)
    assert runner.run_job(context(api, sandbox), job_id) == JobState.CANCELLED
    job, reservation, _ = row(api, job_id)
    assert job.error_class == ErrorClass.CANCELLED and job.started_at is None and sandbox.runs == []
    assert (reservation.ended, reservation.ran) == (True, False)


def test_cancel_that_arrives_while_the_gate_waits_wins(api, monkeypatch, GOOD):
    job_id = queued(api)
    monkeypatch.setattr(release_service, "conclude", lambda *a, **k: (_ for _ in ()).throw(WorkerDied()))
    with pytest.raises(WorkerDied):
        runner.run_job(context(api, StubSandbox(GOOD)), job_id)
    monkeypatch.undo()
    set_job(api, job_id, cancel_requested=True)
    expire_lease(api, job_id)
    reaper(api).reap()
    assert runner.run_job(context(api, StubSandbox()), job_id) == JobState.CANCELLED
    assert row(api, job_id)[2] is None


def test_a_sandbox_that_raises_fails_the_job_and_is_cleaned_up(api):
    job_id = queued(api)
    sandbox = StubSandbox(SandboxError("docker: the engine went away"))
    assert runner.run_job(context(api, sandbox), job_id) == JobState.FAILED
    job, reservation, _ = row(api, job_id)
    assert job.error_class == ErrorClass.INTERNAL_ERROR and "engine went away" in job.operator_log
    assert job_id in sandbox.removed
    # it ran (its code may have seen data), and its row use is unknown: everything stays spent
    assert (reservation.ended, reservation.ran, reservation.rows_used) == (True, True, None)


@pytest.mark.parametrize(
    "outcome, error_class",
    [
        (Outcome(exit_code=137, oom=True), ErrorClass.OOM),
        (Outcome(exit_code=137, timed_out=True), ErrorClass.TIMEOUT),
        (Outcome(exit_code=1), ErrorClass.CRASHED),
        # Its sidecar was killed under it (a job cannot bring it down): the service's failure.
        (Outcome(exit_code=1, sidecar_died=True), ErrorClass.INTERNAL_ERROR),
        (Outcome(exit_code=1, sidecar_oom=True), ErrorClass.INTERNAL_ERROR),
        (Outcome(exit_code=3), ErrorClass.QUERY_BUDGET_EXCEEDED),
        (Outcome(exit_code=0, result_problem="no result file"), ErrorClass.MISSING_OUTPUT),
        (Outcome(exit_code=0, result_problem="result is not a regular file"), ErrorClass.OUTPUT_REJECTED),
        # The built-in suite writes the model's own output: unreadable rows are the service's fault.
        (Outcome(exit_code=0, result=b"not an npz"), ErrorClass.INTERNAL_ERROR),
        (Outcome(exit_code=0, result=b"PK\x03\x04" + b"\0" * 100), ErrorClass.INTERNAL_ERROR),
        (Outcome(exit_code=0, cancelled=True), ErrorClass.CANCELLED),
    ],
)
def test_each_sandbox_outcome_ends_in_its_class(api, outcome, error_class):
    job_id = queued(api)
    state = runner.run_job(context(api, StubSandbox(outcome)), job_id)
    job, reservation, result = row(api, job_id)
    assert (state, job.error_class) == (job.state, error_class) and result is None and reservation.ended


def test_jobs_that_are_not_a_workers_to_run_are_left_alone(api, GOOD):
    assert runner.run_job(context(api, StubSandbox()), "no-such-job") is None
    job_id = queued(api)
    set_job(api, job_id, state=JobState.AWAITING_APPROVAL)
    assert runner.run_job(context(api, StubSandbox(GOOD)), job_id) == JobState.AWAITING_APPROVAL
    assert row(api, job_id)[0].attempts == 0


def test_a_sidecar_that_never_served_the_model_fails_the_job_and_charges_nothing(api):
    job_id = queued(api)
    never = Outcome(exit_code=4, sidecar_ready=False, job_log="onnxruntime could not load the model")
    assert runner.run_job(context(api, StubSandbox(never)), job_id) == JobState.FAILED
    job, reservation, _ = row(api, job_id)
    assert job.error_class == ErrorClass.INTERNAL_ERROR and "never served the model" in job.operator_log
    assert (reservation.ended, reservation.ran) == (True, False)  # the partner's code never ran


def test_a_missing_image_fails_the_job_before_any_container_and_charges_nothing(api):
    job_id = queued(api)

    class NoImages(StubSandbox):
        def image_id(self, tag: str) -> str:
            raise ImageMissing(f"image {tag} is missing: run `evalgate images build`")

    sandbox = NoImages(GOOD_UNUSED := Outcome())
    assert runner.run_job(context(api, sandbox), job_id) == JobState.FAILED
    job, reservation, _ = row(api, job_id)
    assert job.error_class == ErrorClass.INTERNAL_ERROR and "images build" in job.operator_log
    assert sandbox.runs == [] and sandbox.outcomes == [GOOD_UNUSED]
    assert (reservation.ended, reservation.ran) == (True, False)


def test_the_exit_code_of_no_model_is_not_trusted_once_the_model_was_served(api):
    """Partner code could exit 4 itself to look as if it never ran: with a ready sidecar it is a crash."""
    job_id = queued(api)
    assert runner.run_job(context(api, StubSandbox(Outcome(exit_code=4))), job_id) == JobState.FAILED
    job, reservation, _ = row(api, job_id)
    assert job.error_class == ErrorClass.CRASHED and (reservation.ended, reservation.ran) == (True, True)


def test_each_running_job_runs_as_a_host_uid_of_its_own_given_back_when_it_stops(api, GOOD):
    """Two jobs in the sandbox at once hold two different uids of the deployment's range; a job that
    left `running` holds none."""
    first, second = queued(api), queued(api, "macro_f1")
    holds: dict[str, int | None] = {}

    class Watching(StubSandbox):
        def run(self, spec, should_cancel=lambda: False):  # type: ignore[no-untyped-def]
            if not holds:  # while the first job runs, the second one runs too
                holds[first] = int(spec.job_user.split(":")[0])
                assert runner.run_job(context(api, StubSandbox(GOOD)), second) == JobState.RELEASED
            return super().run(spec, should_cancel)

    sandbox = Watching(GOOD)
    assert runner.run_job(context(api, sandbox), first) == JobState.RELEASED
    base, count = api.settings.sandbox_uid_base, api.settings.sandbox_uid_count
    with api.db() as s:
        uids = [s.get(Job, j).sandbox_uid for j in (first, second)]
    assert uids == [None, None]  # given back
    assert base <= holds[first] < base + count
    assert sandbox.runs[0].job_user == f"{holds[first]}:{holds[first]}"


def test_a_uid_taken_by_another_worker_meanwhile_is_skipped(api, monkeypatch):
    """Two workers pick the same free uid: the unique index refuses the second, which takes another."""
    from service.jobs import repository

    a, b = queued(api), queued(api, "macro_f1")
    base = api.settings.sandbox_uid_base
    calls = []

    def racing(n: int) -> int:
        if not calls:  # another worker takes base+7 between this one's read and its write
            with api.db() as other:
                other.get(Job, a).sandbox_uid = base + 7
        calls.append(n)
        return 7

    monkeypatch.setattr(repository.secrets, "randbelow", racing)
    with api.db() as s:
        uid = repository.allocate_sandbox_uid(s, s.get(Job, b), base, api.settings.sandbox_uid_count)
    assert uid == base + 8  # 7 was refused by the index, and then known as held
    with api.db() as s:
        assert (s.get(Job, a).sandbox_uid, s.get(Job, b).sandbox_uid) == (base + 7, base + 8)
