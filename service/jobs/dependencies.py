from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.approvals.models import ApprovalRequest
from service.auth.dependencies import current_caller
from service.auth.service import Caller
from service.deps import SessionDep
from service.errors import raises
from service.jobs import errors
from service.jobs import service as jobs_service
from service.jobs.dispatch import Dispatcher
from service.jobs.models import Job
from service.observability import logs
from service.release.models import Result


async def get_dispatcher(request: Request) -> Dispatcher:
    """The app's dispatcher: Celery, or the embedded worker."""
    return request.app.state.dispatcher  # type: ignore[no-any-return]


def find_visible(session: Session, caller: Caller, job_id: str) -> Job:
    """The job, if the caller may see it; 404 otherwise (never 403: that would say it exists)."""
    job = jobs_service.get_visible(session, caller, job_id)
    logs.bind(job_id=job.id)
    return job


def read_visible(session: Session, caller: Caller, job_id: str) -> tuple[Job, Result | None, ApprovalRequest | None]:
    """`find_visible`, with the job's release and approval request read in the same query."""
    found = jobs_service.read_visible(session, caller, job_id)
    logs.bind(job_id=found[0].id)
    return found


@raises(errors.JobNotFound)
def visible_job(job_id: str, session: SessionDep, caller: Annotated[Caller, Depends(current_caller)]) -> Job:
    """`find_visible` as a dependency (a worker-thread hop of its own: the hottest read calls
    `find_visible` itself, in the endpoint's thread)."""
    return find_visible(session, caller, job_id)


DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
VisibleJob = Annotated[Job, Depends(visible_job)]
