"""The rules of a job after admission (admission.py): its moves, who may see it, cancelling it.

Every move goes through `transition` (checked against the state machine, appended to the ledger),
and every ending through `end`, which also settles the job's budgets: no path can end a job and
forget what it reserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from service.approvals import repository as approvals_repo
from service.approvals.models import ApprovalRequest
from service.auth.roles import Role
from service.auth.service import Caller
from service.canonical import digest
from service.db import utcnow
from service.jobs import errors, views
from service.jobs import repository as repo
from service.jobs.models import Job
from service.jobs.states import (
    ENDED_BADLY,
    IN_PROGRESS,
    TERMINAL,
    TRANSITIONS,
    WAITING,
    JobState,
    JobTarget,
    end_state,
)
from service.ledger import service as ledger
from service.quotas.service import Budgets
from service.release.models import Result
from service.release.outcomes import ErrorClass
from service.reproductions import record as reproduction_record
from service.sanctions import service as sanctions


class InvalidTransition(RuntimeError):
    """A move the state machine does not allow: a bug in the caller, never a partner's doing."""


def record_submitted(
    session: Session,
    *,
    job_id: str,
    principal_id: int,
    spec: dict[str, Any],
    release_key: str,
    suite_version_id: int,
    model_version_id: int,
    dataset_version_id: int,
    actor: str,
    target: JobTarget = JobTarget.REAL,
    reproduces: str | None = None,
    data: dict[str, Any] | None = None,
) -> Job:
    """A new job row, `submitted`, and its `job.submitted` audit event in the same transaction (the
    spec's digest, and `data`): how every job comes to be, whether admitted, on the twin or a
    reproduction's run."""
    job = Job(
        id=job_id,
        principal_id=principal_id,
        state=JobState.SUBMITTED,
        target=target,
        spec=spec,
        spec_sha256=digest(spec),
        release_key=release_key,
        suite_version_id=suite_version_id,
        model_version_id=model_version_id,
        dataset_version_id=dataset_version_id,
        reproduces=reproduces,
    )
    session.add(job)
    session.flush()
    ledger.append(
        session,
        actor=actor,
        action="job.submitted",
        subject=f"job:{job.id}",
        data={"spec_sha256": job.spec_sha256, **(data or {})},
    )
    return job


def transition(session: Session, job: Job, to: JobState, *, actor: str, data: dict[str, Any] | None = None) -> bool:
    """Move a job to a state short of its end. Returns False (and does nothing) if it is already
    there, so a redelivered task can call this again safely."""
    if to in TERMINAL:
        raise InvalidTransition(f"job {job.id}: an ending goes through end(), which settles its budgets")
    return _move(session, job, to, actor=actor, data=data)


def end(
    session: Session,
    budgets: Budgets,
    job: Job,
    error_class: ErrorClass | None,
    *,
    actor: str,
    note: str | None = None,
    data: dict[str, Any] | None = None,
    ran: bool | None = None,
) -> JobState:
    """End a job: released (no error class) or in the state its error class belongs to; settle what
    it reserved; drop the raw result; add `note` to what operators see. Idempotent: a job that has
    ended stays as it is.

    `ran`: whether the partner's code may have run (and seen data). If not given: what the recorded
    sandbox outcome says, else whether the job ever started. A job whose code never ran gets its ε,
    bits and model rows back; one whose code may have run keeps its ε and bits spent."""
    if job.state in TERMINAL:
        return job.state
    twin = job.target == JobTarget.TWIN
    to = end_state(error_class, reproduction=job.reproduces is not None, twin=twin)
    _move(session, job, to, actor=actor, error_class=error_class, data=data)
    if job.reproduces is not None:  # a run that ended before it was compared: its reproduction says so
        reproduction_record.run_ended(session, job.id, error_class, actor=actor)
    if note:
        job.operator_log = f"{job.operator_log}\n{note}" if job.operator_log else note
    facts = job.outcome or {}
    if ran is None:
        ran = (
            bool(facts.get("job_started", True) and facts.get("sidecar_ready", True))
            if facts
            else (job.started_at is not None)
        )
    rows_used = facts.get("usage", {}).get("rows")
    # What the ending gives back moves when the partner sees the job end (its padded time), not before.
    visible = views.padded_end(job, budgets.settings.timing_buckets_s)
    # A hard rule broken (output rejected, model queried past the budget, the model channel abused)
    # counts towards the partner's suspension from when its partner sees the ending
    # (service.sanctions); a request for approval still pending is closed with its job. A twin job's
    # ending breaks no rule on private data, but abusing the channel is abuse on any target.
    if job.reproduces is None:
        sanctions.record_job_ending(
            session,
            job.principal_id,
            job.id,
            None if twin else error_class,
            visible or utcnow(),
            protocol_errors=int(facts.get("usage", {}).get("protocol_errors", 0)),
        )
    approvals_repo.withdraw_for_job(session, job.id)
    budgets.settle(
        session,
        job.id,
        ran=ran,
        rows_used=None if rows_used is None else int(rows_used),
        actor=actor,
        at=visible,
    )
    job.result_raw = None  # pre-noise values are kept no longer than needed
    session.flush()
    return to


def _move(
    session: Session,
    job: Job,
    to: JobState,
    *,
    actor: str,
    error_class: ErrorClass | None = None,
    data: dict[str, Any] | None = None,
) -> bool:
    if job.state == to:
        return False
    if to not in TRANSITIONS.get(job.state, frozenset()):
        raise InvalidTransition(f"job {job.id} is {job.state} and cannot become {to}")
    frm, job.state = job.state, to
    if frm == JobState.RUNNING:
        job.sandbox_uid = None  # its containers have stopped: the uid is free for another job
    now = utcnow()
    if to == JobState.RUNNING:
        job.started_at = now
    if to in TERMINAL:
        job.finished_at = now
        job.error_class = error_class
        job.lease_owner, job.lease_expires_at = None, None  # no worker holds an ended job
    ledger.append(
        session,
        actor=actor,
        action="job.transition",
        subject=f"job:{job.id}",
        data={"from": frm, "to": to, "error_class": error_class, "spec_sha256": job.spec_sha256, **(data or {})},
    )
    session.flush()
    return True


def get_visible(session: Session, caller: Caller, job_id: str) -> Job:
    """A partner sees only its own jobs; another partner's id is 'not found', never 'forbidden'."""
    return _visible(caller, job_id, repo.get(session, job_id))


def read_visible(session: Session, caller: Caller, job_id: str) -> tuple[Job, Result | None, ApprovalRequest | None]:
    """`get_visible`, with the job's release and approval request read in the same query."""
    job, result, request = repo.get_with_release(session, job_id) or (None, None, None)
    return _visible(caller, job_id, job), result, request


def _visible(caller: Caller, job_id: str, job: Job | None) -> Job:
    if job is None or job.reproduces is not None:  # a reproduction's run is read as a reproduction
        raise errors.JobNotFound(f"no job {job_id}")
    if caller.role == Role.PARTNER and job.principal_id != caller.principal_id:
        raise errors.JobNotFound(f"no job {job_id}")
    return job


def cancel(session: Session, budgets: Budgets, caller: Caller, job: Job) -> Job:
    """A job that waits where its partner sees it wait (awaiting approval) is cancelled at once, and
    what it reserved goes back. A running job is stopped by its worker. A partner's job that has ended
    but not yet for its partner (views.py) is marked cancelled for its partner, which is what it will
    see at its padded time. A queued real job that its partner cancels never runs, but is shown and
    charged as a running job's cancel (padded, nothing given back): its partner sees it `running`,
    and answering otherwise would tell it whether the jobs before it had ended (SECURITY.md)."""
    if job.state in TERMINAL:
        shown = job.state
        if caller.role == Role.PARTNER:
            shown = views.partner_view(job, budgets.settings.timing_buckets_s)[0]
        if shown == JobState.CANCELLED:
            return job
        if shown not in TERMINAL:
            _request_cancel(session, caller, job)
            return job
        raise errors.JobFinished(f"job {job.id} already ended as {shown}")
    hidden = job.target == JobTarget.REAL and job.reproduces is None and caller.role == Role.PARTNER
    if job.state == JobState.QUEUED and hidden:
        _request_cancel(session, caller, job)
        note = "cancelled by its partner while queued: it never ran, but is shown and charged as if it had"
        end(session, budgets, job, ErrorClass.CANCELLED, actor=caller.actor, note=note, ran=True)
    elif job.state in (JobState.SUBMITTED, JobState.AWAITING_APPROVAL, JobState.QUEUED):
        end(session, budgets, job, ErrorClass.CANCELLED, actor=caller.actor)
    else:
        _request_cancel(session, caller, job)
    return job


def _request_cancel(session: Session, caller: Caller, job: Job) -> None:
    if not job.cancel_requested:
        job.cancel_requested = True
        ledger.append(session, actor=caller.actor, action="job.cancel_requested", subject=f"job:{job.id}")


def queue_approved(session: Session, suite_version_id: int, actor: str) -> list[str]:
    """After a suite is approved, move its waiting jobs to the queue. Returns ids to enqueue after commit."""
    # A job that also waits for an operator's grant of its request above policy stays waiting.
    waiting = [
        j for j in repo.awaiting_suite(session, suite_version_id) if not approvals_repo.pending_for_job(session, j.id)
    ]
    for job in waiting:
        transition(session, job, JobState.QUEUED, actor=actor)
    return [job.id for job in waiting]


# -- the operators' view of the queue -----------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """What the workers have in hand, for operators: jobs waiting for a worker (oldest first), jobs a
    worker holds (with its lease), and the latest jobs that ended without a release (with their
    operator logs). Each list holds at most `limit` jobs of `total`."""

    waiting: list[Job]
    waiting_total: int
    in_progress: list[Job]
    in_progress_total: int
    ended_badly: list[Job]


def queue(session: Session, limit: int = 100) -> Queue:
    """The queue as operators see it (never partners: it holds every partner's jobs and the logs)."""
    return Queue(
        waiting=repo.in_states(session, WAITING, limit),
        waiting_total=repo.count_in_states(session, WAITING),
        in_progress=repo.in_states(session, IN_PROGRESS, limit),
        in_progress_total=repo.count_in_states(session, IN_PROGRESS),
        ended_badly=repo.in_states(session, ENDED_BADLY, limit, newest_first=True),
    )


def waiting_for_suites(session: Session) -> dict[int, int]:
    """How many jobs wait for each suite version an operator has not approved yet."""
    return repo.awaiting_by_suite(session)
