from __future__ import annotations

from fastapi import APIRouter, Request

from service.auth.dependencies import AnyCaller, Partner, PartnerOrOperator
from service.deps import SessionDep, SettingsDep
from service.jobs import service as jobs_service
from service.jobs.models import Job
from service.jobs.schemas import JobCreate, JobList, JobRead, ResultRead
from service.release import service as release_service

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def to_read(session, job: Job, released: dict | None = None) -> JobRead:
    """The partner-facing view: state and error class only. Container output never appears here.
    `released` holds results already loaded for a page of jobs."""
    result = None
    if job.state == "released":
        r = released.get(job.id) if released is not None else release_service.existing(session, job.id)
        if r is not None:
            result = ResultRead(metrics=r.metrics, provenance=r.provenance, released_at=r.created_at,
                                attestation={"signature": r.signature, "key_id": r.key_id, "ledger_seq": r.ledger_seq})
    return JobRead(id=job.id, state=job.state, error_class=job.error_class, spec=job.spec, spec_sha256=job.spec_sha256,
                   created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at, result=result)


@router.post("", response_model=JobRead, status_code=202)
def submit_job(body: JobCreate, request: Request, caller: Partner, session: SessionDep, settings: SettingsDep) -> JobRead:
    """Submit an evaluation job."""
    used = request.app.state.quota.used(caller.principal_id)
    job = jobs_service.submit(session, settings, caller, body, rows_used_today=used)
    session.commit()  # the worker must find the row: enqueue only after it is committed
    if job.state == "queued":
        request.app.state.dispatcher.enqueue(job.id)
    return to_read(session, job)


@router.get("", response_model=JobList)
def list_jobs(caller: AnyCaller, session: SessionDep, state: str | None = None, limit: int = 100) -> JobList:
    """Jobs the caller may see, newest first."""
    jobs = jobs_service.list_visible(session, caller, state=state, limit=max(1, min(limit, 500)))
    released = release_service.for_jobs(session, [j.id for j in jobs if j.state == "released"])
    return JobList(jobs=[to_read(session, j, released) for j in jobs])


@router.get("/{job_id}", response_model=JobRead)
def read_job(job_id: str, caller: AnyCaller, session: SessionDep) -> JobRead:
    """One job, with its released result if any."""
    return to_read(session, jobs_service.get_visible(session, caller, job_id))


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: str, caller: PartnerOrOperator, session: SessionDep) -> JobRead:
    """Cancel a job; a running one is stopped by its worker."""
    return to_read(session, jobs_service.cancel(session, caller, job_id))
