"""Every query of the jobs domain."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload

from service.jobs.models import Job
from service.jobs.states import JobState

# A job with one of these endings made no release, so the same request may run again.
NOT_RELEASED = frozenset({JobState.REJECTED, JobState.FAILED, JobState.CANCELLED})


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def listing(session: Session, *, principal_id: int | None, state: JobState | None, limit: int) -> list[Job]:
    """Newest first; one principal's jobs, or everyone's when principal_id is None. A listing reads
    the job rows only: joining each row's suite, model and dataset (the relationships' default) made
    the database send, and SQLAlchemy decode, their JSON columns once per job."""
    q = select(Job).options(lazyload("*")).order_by(Job.created_at.desc()).limit(limit)
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


class NoSandboxUid(RuntimeError):
    """Every uid of the deployment's range is held by a running job."""


def allocate_sandbox_uid(session: Session, job: Job, base: int, count: int) -> int:
    """A host uid for the job's sandbox that no other job holds, kept on the job until it leaves
    `running`. The unique index settles a race between two workers: the loser tries another."""
    if job.sandbox_uid is not None:
        return job.sandbox_uid
    held = set(session.execute(select(Job.sandbox_uid).where(Job.sandbox_uid.is_not(None))).scalars())
    for _ in range(16):
        free = count - len(held)
        if free <= 0:
            break
        uid = base + secrets.randbelow(count)
        while uid in held:  # the range is far larger than the jobs running at once: this ends fast
            uid = base + (uid - base + 1) % count
        try:
            with session.begin_nested():
                job.sandbox_uid = uid
                session.flush()
            return uid
        except IntegrityError:
            held.add(uid)
    raise NoSandboxUid(f"no free sandbox uid in {base}..{base + count - 1}")
