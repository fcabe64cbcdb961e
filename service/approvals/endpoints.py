"""Operators' decisions that let waiting work go on: approving a custom suite queues the jobs
that were waiting for it. Above both registry and jobs, so neither needs the other."""

from __future__ import annotations

from fastapi import APIRouter

from service.auth.dependencies import Operator
from service.deps import SessionDep
from service.errors import raises
from service.jobs import service as jobs_service
from service.jobs.dependencies import DispatcherDep
from service.jobs.dispatch import commit_then_enqueue
from service.registry import errors
from service.registry import service as registry
from service.registry.schemas import SuiteRead

router = APIRouter(prefix="/v1", tags=["registry"])


@router.post("/suites/{owner}/{name}/{version}/approve", response_model=SuiteRead)
@raises(errors.InvalidReference, errors.UnknownSuiteVersion)
def approve_suite(
    owner: str, name: str, version: str, caller: Operator, session: SessionDep, dispatcher: DispatcherDep
) -> SuiteRead:
    """Approve custom code to run (operators); jobs waiting on it are queued."""
    row = registry.approve_suite(session, f"{owner}/{name}@{version}", caller.actor)
    commit_then_enqueue(session, dispatcher, jobs_service.queue_approved(session, row.id, caller.actor))
    return SuiteRead.model_validate(row)
