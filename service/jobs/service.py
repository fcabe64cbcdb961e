"""The partner-facing job operations after admission (see admission.py)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth.service import Caller
from service.errors import Conflict, NotFound
from service.jobs.models import Job
from service.jobs.states import TERMINAL, transition
from service.ledger import service as ledger
from service.quotas import leakage
from service.quotas.store import DailyQuota


def get_visible(session: Session, caller: Caller, job_id: str) -> Job:
    """A partner sees only its own jobs; another partner's id is 'not found', never 'forbidden'."""
    job = session.get(Job, job_id)
    if job is None or (caller.role == "partner" and job.principal_id != caller.principal_id):
        raise NotFound(f"no job {job_id}", code="job_not_found")
    return job


def list_visible(session: Session, caller: Caller, *, state: str | None = None, limit: int = 100) -> list[Job]:
    q = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if caller.role == "partner":
        q = q.where(Job.principal_id == caller.principal_id)
    if state:
        q = q.where(Job.state == state)
    return list(session.execute(q).scalars())


def cancel(session: Session, bits: DailyQuota, caller: Caller, job_id: str) -> Job:
    """Before it runs a job is cancelled at once, and what it reserved goes back; a running job is
    stopped by its worker."""
    job = get_visible(session, caller, job_id)
    if job.state in TERMINAL:
        if job.state == "cancelled":
            return job
        raise Conflict(f"job {job_id} already ended as {job.state}", code="job_finished")
    if job.state in ("submitted", "awaiting_approval", "queued"):
        transition(session, job, "cancelled", actor=caller.actor, error_class="cancelled")
        leakage.settle(session, bits, job, actor=caller.actor)
    elif not job.cancel_requested:
        job.cancel_requested = True
        ledger.append(session, actor=caller.actor, action="job.cancel_requested", subject=f"job:{job.id}")
    return job


def queue_approved(session: Session, suite_id: int, actor: str) -> list[str]:
    """After a suite is approved, move its waiting jobs to the queue. Returns ids to enqueue after commit."""
    waiting = session.execute(
        select(Job).where(Job.suite_version_id == suite_id, Job.state == "awaiting_approval")
    ).scalars()
    ids = []
    for job in waiting:
        transition(session, job, "queued", actor=actor)
        ids.append(job.id)
    return ids


def unfinished_ids(session: Session) -> list[str]:
    rows = session.execute(
        select(Job.id).where(Job.state.in_(("queued", "running", "gating"))).order_by(Job.created_at)
    )
    return list(rows.scalars())
