"""Every query of the approvals domain."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.approvals.models import ApprovalDecision, ApprovalRequest, RequestKind, RequestState
from service.db import utcnow


def get(session: Session, request_id: int, *, for_update: bool = False) -> ApprovalRequest | None:
    """One request; `for_update` holds its row until commit, so two decisions on it are serialized."""
    q = select(ApprovalRequest).where(ApprovalRequest.id == request_id)
    if for_update:
        q = q.with_for_update()
    return session.execute(q.execution_options(populate_existing=True)).scalar_one_or_none()


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


def withdraw_for_job(session: Session, job_id: str) -> None:
    """Its job ended before anyone decided: the request is closed."""
    session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.job_id == job_id, ApprovalRequest.state == RequestState.PENDING)
        .values(state=RequestState.WITHDRAWN, decided_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
