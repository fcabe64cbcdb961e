"""Every query of the jobs domain."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.jobs.models import Job
from service.jobs.states import RUNNABLE, JobState

# A job with one of these endings made no release, so the same request may run again.
NOT_RELEASED = frozenset({JobState.REJECTED, JobState.FAILED, JobState.CANCELLED})


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def listing(session: Session, *, principal_id: int | None, state: JobState | None, limit: int) -> list[Job]:
    """Newest first; one principal's jobs, or everyone's when principal_id is None."""
    q = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if principal_id is not None:
        q = q.where(Job.principal_id == principal_id)
    if state is not None:
        q = q.where(Job.state == state)
    return list(session.execute(q).scalars())


def same_release(session: Session, principal_id: int, release_key: str) -> Job | None:
    """The partner's earlier job for the same release, released or still on its way."""
    q = select(Job).where(
        Job.principal_id == principal_id, Job.release_key == release_key, Job.state.not_in(NOT_RELEASED)
    )
    return session.execute(q.order_by(Job.created_at.desc()).limit(1)).scalar_one_or_none()


def awaiting_suite(session: Session, suite_version_id: int) -> list[Job]:
    q = select(Job).where(Job.suite_version_id == suite_version_id, Job.state == JobState.AWAITING_APPROVAL)
    return list(session.execute(q.order_by(Job.created_at)).scalars())


def runnable_ids(session: Session) -> list[str]:
    """Jobs a worker should be running: queued, running or in the gate, oldest first."""
    q = select(Job.id).where(Job.state.in_(RUNNABLE)).order_by(Job.created_at)
    return list(session.execute(q).scalars())
