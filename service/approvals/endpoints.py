"""Operators' decisions that let waiting work go on: approving a custom suite queues the jobs that
were waiting for it; granting a request above policy queues its job, denying it ends the job. Above
registry and jobs, so neither needs the other."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.approvals import errors as approval_errors
from service.approvals import service as approvals
from service.approvals.models import RequestState
from service.approvals.schemas import ApprovalRead, DecisionCreate, SuiteApproval
from service.auth.dependencies import Operator
from service.deps import SessionDep, SettingsDep
from service.errors import raises
from service.jobs.dependencies import DispatcherDep
from service.jobs.dispatch import commit_then_enqueue
from service.policies import errors as policy_errors
from service.quotas.dependencies import BudgetsDep
from service.registry import errors
from service.registry.schemas import SuiteRead

router = APIRouter(prefix="/v1", tags=["registry"])
RequestId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the request's id")]
requests_router = APIRouter(prefix="/v1/approval-requests", tags=["approvals"])


@router.post("/suites/{owner}/{name}/{version}/approve", response_model=SuiteRead)
@raises(errors.InvalidReference, errors.UnknownSuiteVersion, approval_errors.SecondOperatorRequired)
def approve_suite(
    owner: str,
    name: str,
    version: str,
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    body: SuiteApproval | None = None,
) -> SuiteRead:
    """Approve custom code to run (operators); jobs waiting on it are queued. Where two operators
    must approve, the first approval is recorded and `approved` stays false until a second one."""
    row, runnable = approvals.approve_suite(
        session, settings, f"{owner}/{name}@{version}", caller.actor, body.reason if body else None
    )
    commit_then_enqueue(session, dispatcher, runnable)
    return SuiteRead.model_validate(row)


@requests_router.get("", response_model=list[ApprovalRead])
def list_requests(
    caller: Operator, session: SessionDep, settings: SettingsDep, state: RequestState | None = None, limit: int = 100
) -> list[ApprovalRead]:
    """Approval requests, newest first; `state=pending` for those waiting (operators)."""
    return approvals.listing(session, settings, state, max(1, min(limit, 500)))


@requests_router.get("/{request_id}", response_model=ApprovalRead)
@raises(approval_errors.ApprovalRequestNotFound)
def read_request(request_id: RequestId, caller: Operator, session: SessionDep, settings: SettingsDep) -> ApprovalRead:
    """One approval request with its decisions (operators)."""
    return approvals.read(session, settings, request_id)


@requests_router.post("/{request_id}/grant", response_model=ApprovalRead)
@raises(
    approval_errors.ApprovalRequestNotFound,
    approval_errors.ApprovalAlreadyDecided,
    approval_errors.SecondOperatorRequired,
    policy_errors.ReasonRequired,
)
def grant_request(
    request_id: RequestId,
    body: DecisionCreate,
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
) -> ApprovalRead:
    """Grant a request with a reason (operators): its job runs with exactly what it asked, once
    enough distinct operators granted it."""
    found, runnable = approvals.grant(session, settings, request_id, body.reason, caller.actor)
    commit_then_enqueue(session, dispatcher, runnable)
    return found


@requests_router.post("/{request_id}/deny", response_model=ApprovalRead)
@raises(approval_errors.ApprovalRequestNotFound, approval_errors.ApprovalAlreadyDecided, policy_errors.ReasonRequired)
def deny_request(
    request_id: RequestId,
    body: DecisionCreate,
    caller: Operator,
    session: SessionDep,
    settings: SettingsDep,
    budgets: BudgetsDep,
) -> ApprovalRead:
    """Deny a request with a reason (operators): its job ends cancelled, and its partner sees why."""
    return approvals.deny(session, settings, budgets, request_id, body.reason, caller.actor)
