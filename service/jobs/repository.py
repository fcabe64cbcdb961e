"""Every query of the jobs domain."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload

from service.approvals.models import ApprovalRequest
from service.db import utcnow
from service.jobs.models import Job
from service.jobs.states import TERMINAL, JobState, JobTarget
from service.release.models import Result
from service.reproductions.models import Reproduction

# A job with one of these endings made no release, so the same request may run again.
NOT_RELEASED = frozenset({JobState.REJECTED, JobState.FAILED, JobState.CANCELLED, JobState.COMPARED, JobState.JUDGED})


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def get_with_release(session: Session, job_id: str) -> tuple[Job, Result | None, ApprovalRequest | None] | None:
    """The job, its release and its approval request, in one query (the API's most frequent read:
    on PostgreSQL each query is a round trip, and these were three)."""
    row = session.execute(
        select(Job, Result, ApprovalRequest)
        .outerjoin(Result, Result.job_id == Job.id)
        .outerjoin(ApprovalRequest, ApprovalRequest.job_id == Job.id)
        .where(Job.id == job_id)
    ).first()
    return None if row is None else (row[0], row[1], row[2])


def listing(session: Session, *, principal_id: int | None, state: JobState | None, limit: int) -> list[Job]:
    """Newest first; one principal's jobs, or everyone's when principal_id is None. Reproductions'
    runs are listed with their reproductions (service.reproductions), not here. The suite, model and
    dataset are loaded when first read, each once (the identity map), rather than joined to every row
    (the relationships' default), which made the database send, and SQLAlchemy decode, their JSON
    columns once per job."""
    q = select(Job).options(lazyload("*")).where(Job.reproduces.is_(None)).order_by(Job.created_at.desc()).limit(limit)
    if principal_id is not None:
        q = q.where(Job.principal_id == principal_id)
    if state is not None:
        q = q.where(Job.state == state)
    return list(session.execute(q).scalars())


def newest_for_release(session: Session, principal_id: int, release_key: str) -> Job | None:
    """The partner's newest job for the same release, however it stands (whether the partner may
    know how it stands is the caller's question: service.jobs.views.partner_view). An older one
    ended without a release, or this one would not have been admitted."""
    q = select(Job).where(Job.principal_id == principal_id, Job.release_key == release_key)
    return session.execute(q.order_by(Job.created_at.desc()).limit(1)).scalar_one_or_none()


def unfinished_twin_job(session: Session, principal_id: int) -> Job | None:
    """One of the partner's twin jobs that has not ended, if any."""
    q = select(Job).where(Job.principal_id == principal_id, Job.target == JobTarget.TWIN, Job.state.not_in(TERMINAL))
    return session.execute(q.order_by(Job.created_at).limit(1)).scalar_one_or_none()


def recent_reproductions_of(session: Session, principal_id: int) -> list[tuple[Reproduction, Job]]:
    """Reproductions of the partner's jobs that have not ended, or ended in the last day (a
    partner sees a reproduction's end at most its job's padded time limit after it was asked)."""
    since = utcnow() - timedelta(days=1)
    q = (
        select(Reproduction, Job)
        .join(Job, Job.id == Reproduction.job_id)
        .where(Job.principal_id == principal_id)
        .where((Reproduction.finished_at.is_(None)) | (Reproduction.finished_at >= since))
    )
    return [(r, j) for r, j in session.execute(q.options(lazyload("*"))).tuples()]


def twin_jobs_since(session: Session, principal_id: int, since: datetime) -> int:
    """How many twin jobs the partner has had admitted since `since` (ended or not, cancelled too)."""
    q = select(func.count()).select_from(Job).where(Job.principal_id == principal_id, Job.target == JobTarget.TWIN)
    return int(session.execute(q.where(Job.created_at >= since)).scalar_one())


def in_states(session: Session, states: frozenset[JobState], limit: int, *, newest_first: bool = False) -> list[Job]:
    """Everyone's jobs in these states, by creation (oldest first unless `newest_first`)."""
    order = Job.created_at.desc() if newest_first else Job.created_at
    return list(session.execute(select(Job).where(Job.state.in_(states)).order_by(order).limit(limit)).scalars())


def count_in_states(session: Session, states: frozenset[JobState]) -> int:
    return session.execute(select(func.count()).select_from(Job).where(Job.state.in_(states))).scalar_one()


def awaiting_by_suite(session: Session) -> dict[int, int]:
    """How many jobs wait for each suite version's approval."""
    q = select(Job.suite_version_id, func.count()).where(Job.state == JobState.AWAITING_APPROVAL)
    return {suite_id: n for suite_id, n in session.execute(q.group_by(Job.suite_version_id)).all()}


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


def usage_by_partner(
    session: Session, *, model_version_id: int | None = None, dataset_version_id: int | None = None
) -> list[tuple[int, int, int, Any, Any]]:
    """Per partner that used a model (or dataset) version: (principal id, jobs, released, first, last)."""
    q = select(
        Job.principal_id,
        func.count(),
        func.sum(case((Job.state == JobState.RELEASED, 1), else_=0)),
        func.min(Job.created_at),
        func.max(Job.created_at),
    ).where(Job.reproduces.is_(None))
    if model_version_id is not None:
        q = q.where(Job.model_version_id == model_version_id)
    if dataset_version_id is not None:
        q = q.where(Job.dataset_version_id == dataset_version_id)
    rows = session.execute(q.group_by(Job.principal_id).order_by(Job.principal_id)).all()
    return [(pid, int(n), int(released or 0), first, last) for pid, n, released, first, last in rows]


def unfinished_on_model(session: Session, model_version_id: int) -> int:
    """How many jobs on a model version have not ended."""
    q = select(func.count()).select_from(Job).where(Job.model_version_id == model_version_id)
    return int(session.execute(q.where(Job.state.not_in(TERMINAL))).scalar_one())


def released_on_model(session: Session, model_version_id: int) -> list[str]:
    """Ids of the released jobs computed on a model version, oldest first."""
    q = select(Job.id).where(Job.model_version_id == model_version_id, Job.state == JobState.RELEASED)
    return list(session.execute(q.order_by(Job.created_at, Job.id)).scalars())


def released_on_dataset(session: Session, dataset_version_id: int) -> list[str]:
    """Ids of the released jobs computed on a dataset version, oldest first."""
    q = select(Job.id).where(Job.dataset_version_id == dataset_version_id, Job.state == JobState.RELEASED)
    return list(session.execute(q.order_by(Job.created_at, Job.id)).scalars())
