"""HTTP for reproductions: ask for one, read a job's."""

from __future__ import annotations

from fastapi import APIRouter

from service.auth.dependencies import AnyCaller
from service.deps import SessionDep, SettingsDep
from service.errors import EvalgateError, raises
from service.jobs.dependencies import DispatcherDep, VisibleJob
from service.jobs.dispatch import commit_then_enqueue
from service.quotas import errors as quota_errors
from service.quotas.dependencies import BudgetsDep
from service.reproductions import errors
from service.reproductions import service as reproductions
from service.reproductions.schemas import ReproductionList, ReproductionRead

router = APIRouter(prefix="/v1/jobs", tags=["reproductions"])


@router.post("/{job_id}/reproduce", response_model=ReproductionRead, status_code=202)
@raises(
    errors.ReproductionNotAllowed,
    errors.JobNotReleased,
    errors.PartnersTwinJobRunning,
    errors.ReproductionInProgress,
    errors.ReproductionsExhausted,
    quota_errors.AdmissionBusy,
    quota_errors.TooManyConcurrentJobs,
    quota_errors.DailyQueryBudgetExhausted,
    quota_errors.LifetimeRowsExhausted,
)
def reproduce_job(
    job: VisibleJob,
    caller: AnyCaller,
    session: SessionDep,
    settings: SettingsDep,
    budgets: BudgetsDep,
    dispatcher: DispatcherDep,
) -> ReproductionRead:
    """Re-run a released job in a fresh sandbox, charged to the caller, and compare its raw result."""
    try:
        with budgets.admission(caller.principal_id):  # held until committed: the caller's counts stay exact
            reproduction, run = reproductions.request(session, settings, budgets, caller, job)
            commit_then_enqueue(session, dispatcher, [run] if run is not None else [])
    except EvalgateError as e:
        session.rollback()  # nothing of the refused request stays; the refusal itself is recorded
        reproductions.record_refusal(session, caller, job.id, e.code)
        session.commit()
        raise
    return reproductions.to_read(reproduction, caller, job, settings.timing_buckets_s)


@router.get("/{job_id}/reproductions", response_model=ReproductionList)
def list_reproductions(
    job: VisibleJob, caller: AnyCaller, session: SessionDep, settings: SettingsDep
) -> ReproductionList:
    """The job's reproductions, newest first."""
    return ReproductionList(reproductions=reproductions.of_job(session, caller, job, settings.timing_buckets_s))
