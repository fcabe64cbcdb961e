"""Approvals: operators' grants and denials of what waits for them.

- **Requests above policy.** A submission with `"request_approval": true` that asks for more than its
  partner's policy allows (a larger ε per metric than the ceiling, a larger query budget than the
  partner's largest, a model or dataset the partner may not use yet) is admitted into
  `awaiting_approval` with its budgets reserved and a pending request naming exactly what it asks
  past the policy (jobs.admission). Its spec is fixed at admission, so a grant lets it run with that
  exception and nothing else: the job is queued (or, if its suite still waits, stays until that is
  approved). A denial ends it `cancelled` (what it reserved goes back), with the reason on the job.
- **Two operators.** With `EVALGATE_APPROVALS_TWO_OPERATORS`, a grant needs two distinct operators;
  the same operator granting twice is refused `second_operator_required`. One denial is enough. The
  same holds for custom suites: the first operator's approval is recorded, the second approves.
- Every request and decision is on the audit log (`approval.requested`, `approval.granted`,
  `approval.denied`, `approval.withdrawn` comes with the job's own end); a request's final decision is
  also on the transparency log, as a commitment to its audit record (leaf kind `policy`).
- **One decision at a time.** Each decision first takes the pending request with a compare-and-set
  (`_claim`), so concurrent decisions on one request run one after another on SQLite and Postgres:
  exactly one settles it, and a later one is refused `approval_already_decided` having written nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.approvals import errors
from service.approvals import repository as repo
from service.approvals.models import ApprovalDecision, ApprovalRequest, Decision, RequestKind, RequestState
from service.approvals.schemas import ApprovalRead, DecisionRead
from service.auth.models import Principal
from service.canonical import canonical_json
from service.config import Settings
from service.jobs import service as jobs_service
from service.jobs.models import Job
from service.jobs.states import JobState
from service.ledger import service as ledger
from service.policies import errors as policy_errors
from service.quotas.service import Budgets
from service.registry import service as registry
from service.registry import suites
from service.registry.models import SuiteVersion
from service.release.outcomes import ErrorClass
from service.transparency import service as tlog

DECISION_LEAF = "policy"  # the transparency log's leaf kind for operators' and policy decisions


def open_exception(
    session: Session, job: Job, actor: str, exceptions: list[dict[str, Any]], note: str | None
) -> ApprovalRequest:
    """A pending request for a job admitted above its policy (jobs.admission, same transaction)."""
    row = ApprovalRequest(
        kind=RequestKind.EXCEPTION,
        state=RequestState.PENDING,
        job_id=job.id,
        principal_id=job.principal_id,
        exceptions=exceptions,
        note=note,
    )
    session.add(row)
    session.flush()
    ledger.append(
        session,
        actor=actor,
        action="approval.requested",
        subject=f"approval:{row.id}",
        data={"job": job.id, "exceptions": exceptions, "note": note},
    )
    return row


def grants_needed(settings: Settings) -> int:
    return 2 if settings.approvals_two_operators else 1


def grant(
    session: Session, settings: Settings, request_id: int, reason: str, actor: str
) -> tuple[ApprovalRead, list[str]]:
    """One operator's grant; with enough distinct grants, the request is granted and its job queued.
    Returns the request and the job ids to enqueue after commit."""
    row, job = _claim(session, request_id)
    reason = _reason(reason)
    if not _decide(session, settings, row, Decision.GRANT, reason, actor):
        return read(session, settings, request_id), []
    runnable: list[str] = []
    if row.kind == RequestKind.EXCEPTION:
        assert job is not None  # a foreign key
        if job.state == JobState.AWAITING_APPROVAL and job.suite.approved:
            jobs_service.transition(
                session, job, JobState.QUEUED, actor=actor, data={"approval": row.id, "exceptions": row.exceptions}
            )
            runnable.append(job.id)
    else:
        assert row.suite_version_id is not None
        suite = session.get(SuiteVersion, row.suite_version_id)
        assert suite is not None
        registry.approve_suite(session, suite.ref, actor)
        runnable = jobs_service.queue_approved(session, suite.id, actor)
    return read(session, settings, request_id), runnable


def deny(
    session: Session, settings: Settings, budgets: Budgets, request_id: int, reason: str, actor: str
) -> ApprovalRead:
    """Deny a request (one operator is enough): its job ends `cancelled`, everything it reserved goes
    back, and its partner sees the reason on the job."""
    row, job = _claim(session, request_id)
    reason = _reason(reason)
    _decide(session, settings, row, Decision.DENY, reason, actor)
    if row.kind == RequestKind.EXCEPTION:
        assert job is not None
        jobs_service.end(
            session,
            budgets,
            job,
            ErrorClass.CANCELLED,
            actor=actor,
            note=f"approval request {row.id} denied: {reason}",
            data={"approval": row.id, "denied": reason},
            ran=False,
        )
    return read(session, settings, request_id)


def approve_suite(
    session: Session, settings: Settings, ref: str, actor: str, reason: str | None
) -> tuple[SuiteVersion, list[str]]:
    """Approve custom code (operators): at once, or, where two operators must, the first approval is
    recorded on a pending request and the second (another operator) approves. Returns the suite and
    the jobs to enqueue after commit."""
    suite = suites.resolve_suite(session, ref)
    if suite.approved:
        return suite, []
    if grants_needed(settings) == 1:
        registry.approve_suite(session, suite.ref, actor)
        return suite, jobs_service.queue_approved(session, suite.id, actor)
    repo.hold_suite(session, suite.id)
    session.refresh(suite)  # as it is now that its approvals are held: another may have approved it
    if suite.approved:
        return suite, []
    row = repo.pending_suite(session, suite.id)
    if row is None:
        row = ApprovalRequest(
            kind=RequestKind.SUITE, state=RequestState.PENDING, suite_version_id=suite.id, principal_id=suite.owner_id
        )
        session.add(row)
        session.flush()
        ledger.append(
            session, actor=actor, action="approval.requested", subject=f"approval:{row.id}", data={"suite": suite.ref}
        )
    _, runnable = grant(session, settings, row.id, (reason or "").strip() or "suite approved", actor)
    return suite, runnable


def read(session: Session, settings: Settings, request_id: int) -> ApprovalRead:
    row = repo.get(session, request_id)
    if row is None:
        raise errors.ApprovalRequestNotFound(f"no approval request {request_id}")
    return _reads(session, settings, [row])[0]


def listing(session: Session, settings: Settings, state: RequestState | None, limit: int) -> list[ApprovalRead]:
    """Requests, newest first (operators)."""
    return _reads(session, settings, repo.listing(session, state, limit))


def _reads(session: Session, settings: Settings, rows: list[ApprovalRequest]) -> list[ApprovalRead]:
    decided = repo.decisions(session, [r.id for r in rows])
    out = []
    for r in rows:
        partner = session.get(Principal, r.principal_id) if r.principal_id is not None else None
        suite = session.get(SuiteVersion, r.suite_version_id) if r.suite_version_id is not None else None
        out.append(
            ApprovalRead(
                id=r.id,
                kind=r.kind,
                state=r.state,
                job_id=r.job_id,
                suite=suite.ref if suite else None,
                partner=partner.name if partner else None,
                exceptions=r.exceptions,
                note=r.note,
                reason=r.reason,
                created_at=r.created_at,
                decided_at=r.decided_at,
                grants_needed=grants_needed(settings),
                decisions=[DecisionRead.model_validate(d) for d in decided[r.id]],
            )
        )
    return out


def _claim(session: Session, request_id: int) -> tuple[ApprovalRequest, Job | None]:
    """The pending request, held by this transaction until it ends (repository.claim), and its job.

    Every decision goes through here first, so decisions on one request happen one after another on
    SQLite and Postgres alike: the one that settles it wins, and each later one is refused
    `approval_already_decided` with nothing written (its transaction is rolled back). The job's row
    is locked before the request's, in the order its own ending takes them (jobs.service.end moves
    the job, then withdraws the request): a decision racing its partner's cancel waits for it
    rather than deadlocking with it on Postgres."""
    found = repo.get(session, request_id)
    if found is None:
        raise errors.ApprovalRequestNotFound(f"no approval request {request_id}")
    if found.job_id is not None:
        repo.lock_job(session, found.job_id)
    if not repo.claim(session, request_id):
        now = repo.get(session, request_id)
        raise errors.ApprovalAlreadyDecided(f"approval request {request_id} is {now.state if now else found.state}")
    # Read again now that it is held: what was read before the claim may already be out of date.
    row = repo.get(session, request_id)
    assert row is not None
    job = session.get(Job, row.job_id, populate_existing=True) if row.job_id is not None else None
    return row, job


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise policy_errors.ReasonRequired("say why (`reason`): it is recorded with the decision")
    return reason


def _decide(
    session: Session, settings: Settings, row: ApprovalRequest, decision: Decision, reason: str, actor: str
) -> bool:
    """Record one operator's decision; True when it settles the request."""
    before = repo.decisions(session, [row.id])[row.id]
    if decision == Decision.GRANT and any(d.actor == actor and d.decision == Decision.GRANT for d in before):
        raise errors.SecondOperatorRequired(
            f"you already granted approval request {row.id}; another operator must grant it too",
            alternatives=["ask a second operator to grant it"],
        )
    session.add(ApprovalDecision(request_id=row.id, actor=actor[:96], decision=decision, reason=reason))
    grants = sum(d.decision == Decision.GRANT for d in before) + (decision == Decision.GRANT)
    needed = grants_needed(settings)
    final = decision == Decision.DENY or grants >= needed
    if final:
        settled = RequestState.DENIED if decision == Decision.DENY else RequestState.GRANTED
        if not repo.settle(session, row.id, settled, reason):  # held by _claim: only if that is bypassed
            raise errors.ApprovalAlreadyDecided(f"approval request {row.id} was decided meanwhile")
        session.refresh(row)
    session.flush()
    event = ledger.append(
        session,
        actor=actor,
        action=f"approval.{'denied' if decision == Decision.DENY else 'granted'}",
        subject=f"approval:{row.id}",
        data={
            "reason": reason,
            "grants": grants,
            "needed": needed,
            "final": final,
            "job": row.job_id,
            "exceptions": row.exceptions,
        },
    )
    if final:
        # A commitment to the audit record (no partner name), as for policy changes.
        tlog.append(
            session,
            DECISION_LEAF,
            canonical_json({"kind": DECISION_LEAF, "scope": "approval", "audit_leaf_sha256": event.leaf_hash}).encode(),
        )
    return final
