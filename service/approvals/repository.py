"""Every query of the approvals domain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Result, select, update
from sqlalchemy.orm import Session

from service.approvals.models import ApprovalDecision, ApprovalRequest, RequestKind, RequestState
from service.db import utcnow
from service.jobs.models import Job
from service.registry.models import SuiteVersion

if TYPE_CHECKING:
    from sqlalchemy import CursorResult


def get(session: Session, request_id: int) -> ApprovalRequest | None:
    """One request, as the database has it now (not as this session last saw it)."""
    q = select(ApprovalRequest).where(ApprovalRequest.id == request_id)
    return session.execute(q.execution_options(populate_existing=True)).scalar_one_or_none()


def lock_job(session: Session, job_id: str) -> None:
    """Hold a request's job row until commit (Postgres; SQLite has no row locks). Its id only: the
    job's eager joins cannot be locked."""
    session.execute(select(Job.id).where(Job.id == job_id).with_for_update())


def hold_suite(session: Session, suite_version_id: int) -> None:
    """Serialize the approvals of one suite version until commit, so that two first approvals at once
    find one request rather than open one each: the suite's row lock on Postgres; on SQLite the
    database's write lock, which an UPDATE takes even when it changes no row."""
    session.execute(select(SuiteVersion.id).where(SuiteVersion.id == suite_version_id).with_for_update())
    session.execute(
        update(ApprovalRequest)
        .where(
            ApprovalRequest.kind == RequestKind.SUITE,
            ApprovalRequest.suite_version_id == suite_version_id,
            ApprovalRequest.state == RequestState.PENDING,
        )
        .values(state=RequestState.PENDING)
        .execution_options(synchronize_session=False)
    )


def claim(session: Session, request_id: int) -> bool:
    """Take a pending request for this transaction's decision: True if it is still pending.

    A compare-and-set, not `SELECT ... FOR UPDATE`, which SQLite ignores: the UPDATE takes SQLite's
    write lock (Postgres: the row's lock), so a concurrent decision waits here until this transaction
    ends, then finds the request no longer pending (rowcount 0) if this one settled it. Nothing
    changes yet; a decision that does not settle the request (the first of two grants) still holds
    it, so the next decision reads this one's."""
    done = session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == request_id, ApprovalRequest.state == RequestState.PENDING)
        .values(state=RequestState.PENDING)
        .execution_options(synchronize_session=False)
    )
    return _one_row(done)


def settle(session: Session, request_id: int, state: RequestState, reason: str) -> bool:
    """Pending → granted or denied, only if still pending (compare-and-set); True if this did it."""
    done = session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.id == request_id, ApprovalRequest.state == RequestState.PENDING)
        .values(state=state, reason=reason, decided_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return _one_row(done)


def for_job(session: Session, job_id: str) -> ApprovalRequest | None:
    return session.execute(select(ApprovalRequest).where(ApprovalRequest.job_id == job_id)).scalar_one_or_none()


def for_jobs(session: Session, job_ids: list[str]) -> dict[str, ApprovalRequest]:
    if not job_ids:
        return {}
    rows = session.execute(select(ApprovalRequest).where(ApprovalRequest.job_id.in_(job_ids))).scalars()
    return {r.job_id: r for r in rows if r.job_id is not None}


def pending_for_job(session: Session, job_id: str) -> bool:
    found = for_job(session, job_id)
    return found is not None and found.state == RequestState.PENDING


def pending_suite(session: Session, suite_version_id: int) -> ApprovalRequest | None:
    return session.execute(
        select(ApprovalRequest).where(
            ApprovalRequest.kind == RequestKind.SUITE,
            ApprovalRequest.suite_version_id == suite_version_id,
            ApprovalRequest.state == RequestState.PENDING,
        )
    ).scalar_one_or_none()


def listing(session: Session, state: RequestState | None, limit: int) -> list[ApprovalRequest]:
    q = select(ApprovalRequest)
    if state is not None:
        q = q.where(ApprovalRequest.state == state)
    return list(session.execute(q.order_by(ApprovalRequest.id.desc()).limit(limit)).scalars())


def decisions(session: Session, request_ids: list[int]) -> dict[int, list[ApprovalDecision]]:
    found: dict[int, list[ApprovalDecision]] = {i: [] for i in request_ids}
    if request_ids:
        q = select(ApprovalDecision).where(ApprovalDecision.request_id.in_(request_ids)).order_by(ApprovalDecision.id)
        for d in session.execute(q).scalars():
            found[d.request_id].append(d)
    return found


def _one_row(result: Result[Any]) -> bool:
    """Whether an UPDATE changed exactly one row (its result is a CursorResult, which Session.execute's
    annotation does not say)."""
    return cast("CursorResult[Any]", result).rowcount == 1


def withdraw_for_job(session: Session, job_id: str) -> None:
    """Its job ended before anyone decided: the request is closed. A compare-and-set like `settle`:
    a request an operator decided first keeps that decision (the job ended after it)."""
    session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.job_id == job_id, ApprovalRequest.state == RequestState.PENDING)
        .values(state=RequestState.WITHDRAWN, decided_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
