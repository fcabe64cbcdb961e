from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from service.auth.dependencies import AnyCaller, Partner, PartnerOrOperator
from service.auth.service import Caller
from service.db import session_scope
from service.deps import SessionDep, SettingsDep
from service.errors import EvalgateError
from service.jobs import admission
from service.jobs import service as jobs_service
from service.jobs.models import Job
from service.jobs.schemas import JobCreate, JobList, JobRead, ResultRead
from service.jobs.states import TERMINAL
from service.ledger import service as ledger
from service.release import service as release_service
from service.release import timing

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def to_read(
    session, job: Job, caller: Caller, buckets: list[float], released: dict | None = None, reused: bool = False
) -> JobRead:
    """What the caller may see of a job. Partners see the state and error class only (container output
    never appears here), and a job that ran finishes for them at its padded time, not before.
    `released` holds results already loaded for a page of jobs."""
    state, error_class, started, finished = job.state, job.error_class, job.started_at, job.finished_at
    if caller.role == "partner":
        started = None  # when a job left the queue says how long other jobs ran
        if state in TERMINAL and job.started_at is not None:
            finished = timing.visible_at(job.created_at, job.finished_at, buckets)
            if datetime.now(UTC) < finished:
                state, error_class, finished = "running", None, None
    result = None
    if state == "released":
        r = released.get(job.id) if released is not None else release_service.existing(session, job.id)
        if r is not None:
            result = ResultRead(
                metrics=r.metrics,
                disclosure=r.disclosure,
                provenance=r.provenance,
                released_at=finished or r.created_at,
                attestation={"signature": r.signature, "key_id": r.key_id, "ledger_seq": r.ledger_seq},
            )
    return JobRead(
        id=job.id,
        state=state,
        error_class=error_class,
        spec=job.spec,
        spec_sha256=job.spec_sha256,
        created_at=job.created_at,
        started_at=started,
        finished_at=finished,
        result=result,
        reused=reused,
    )


def _audit_refusal(request: Request, caller: Caller, error: EvalgateError, body: JobCreate) -> None:
    """Refusals are decisions too; the request's own transaction is rolled back, so record it apart."""
    with session_scope(request.app.state.sessionmaker) as s:
        ledger.append(
            s,
            actor=caller.actor,
            action="job.refused",
            subject=f"principal:{caller.name}",
            data={
                "reason": error.code,
                "suite": body.suite,
                "model": body.model,
                "dataset": body.dataset,
                "metrics": sorted(body.metrics),
            },
        )


@router.post(
    "",
    response_model=JobRead,
    status_code=202,
    responses={200: {"model": JobRead, "description": "the same release was made or is on its way"}},
)
def submit_job(
    body: JobCreate, request: Request, response: Response, caller: Partner, session: SessionDep, settings: SettingsDep
) -> JobRead:
    """Submit an evaluation job; the same release asked for again returns the earlier job."""
    state = request.app.state
    with state.guards.partner_lock(caller.principal_id):
        stores = admission.Stores(
            guards=state.guards, bits=state.bits, rows_used_today=state.quota.used(caller.principal_id)
        )
        try:
            job, reused = admission.submit(session, settings, caller, body, stores)
        except EvalgateError as e:
            session.rollback()
            _audit_refusal(request, caller, e, body)
            raise
        try:
            session.commit()  # the worker must find the row: enqueue only after it is committed
        except BaseException:
            if not reused:
                state.bits.settle(job.id, 0)  # Redis: give back; the database store was rolled back with the job
            raise
    if reused:
        response.status_code = 200
    elif job.state == "queued":
        state.dispatcher.enqueue(job.id)
    return to_read(session, job, caller, settings.timing_buckets_s, reused=reused)


@router.get("", response_model=JobList)
def list_jobs(
    caller: AnyCaller, session: SessionDep, settings: SettingsDep, state: str | None = None, limit: int = 100
) -> JobList:
    """Jobs the caller may see, newest first."""
    limit = max(1, min(limit, 500))
    # A partner's filter applies to the states it is shown (padded), not the stored ones.
    stored_filter = None if caller.role == "partner" else state
    jobs = jobs_service.list_visible(session, caller, state=stored_filter, limit=500 if state else limit)
    released = release_service.for_jobs(session, [j.id for j in jobs if j.state == "released"])
    views = [to_read(session, j, caller, settings.timing_buckets_s, released) for j in jobs]
    return JobList(jobs=[v for v in views if state is None or v.state == state][:limit])


@router.get("/{job_id}", response_model=JobRead)
def read_job(job_id: str, caller: AnyCaller, session: SessionDep, settings: SettingsDep) -> JobRead:
    """One job, with its released result if any."""
    return to_read(session, jobs_service.get_visible(session, caller, job_id), caller, settings.timing_buckets_s)


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(
    job_id: str, request: Request, caller: PartnerOrOperator, session: SessionDep, settings: SettingsDep
) -> JobRead:
    """Cancel a job; a running one is stopped by its worker."""
    job = jobs_service.get_visible(session, caller, job_id)
    if job.state in TERMINAL:
        shown = to_read(session, job, caller, settings.timing_buckets_s)
        if shown.state == "running":  # ended, but not yet for the partner: the answer must not say so
            return shown
    job = jobs_service.cancel(session, request.app.state.bits, caller, job_id)
    return to_read(session, job, caller, settings.timing_buckets_s)
