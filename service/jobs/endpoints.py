"""HTTP for jobs: submit, list, read, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.auth.dependencies import AnyCaller, Partner, PartnerOrOperator
from service.deps import SessionDep, SettingsDep
from service.errors import raises
from service.jobs import admission, errors, twin
from service.jobs import service as jobs_service
from service.jobs.dependencies import DispatcherDep, VisibleJob, read_visible
from service.jobs.schemas import JobCreate, JobList, JobPreview, JobRead
from service.jobs.states import JobState, JobTarget
from service.jobs.views import listing, to_read
from service.policies import errors as policy_errors
from service.quotas import errors as quota_errors
from service.quotas.dependencies import BudgetsDep
from service.registry import errors as registry_errors
from service.sanctions import errors as sanction_errors
from service.twins import errors as twin_errors

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    response_model=JobRead | JobPreview,
    status_code=202,
    responses={
        200: {
            "model": JobRead | JobPreview,
            "description": "the same release was made or is on its way; or, with dry_run, what the job would cost",
        }
    },
)
@raises(
    # the suite, model and dataset named, and whether they fit one another
    registry_errors.InvalidReference,
    registry_errors.UnknownSuiteVersion,
    registry_errors.UnknownModelVersion,
    registry_errors.UnknownDatasetVersion,
    registry_errors.ModelRetired,
    registry_errors.DatasetRetired,
    registry_errors.DatasetTooSmall,
    registry_errors.ModelDatasetMismatch,
    registry_errors.ModelContractUnknown,
    registry_errors.UnknownModelOutput,
    registry_errors.ModelOutputAmbiguous,
    # what is asked of them
    errors.UndeclaredMetric,
    errors.MetricNeedsProbabilities,
    errors.InvalidSlice,
    errors.ResourcesExceedLimit,
    errors.EpsilonAbovePolicy,
    errors.ReleaseExceedsLeakageCap,
    # the partner's policy: the models and datasets it may use
    policy_errors.ModelNotAllowed,
    policy_errors.DatasetNotAllowed,
    # the partner's budgets
    quota_errors.AdmissionBusy,
    quota_errors.TooManyConcurrentJobs,
    quota_errors.DailyQueryBudgetExhausted,
    quota_errors.PrivacyBudgetExhausted,
    quota_errors.LeakageBudgetExhausted,
    quota_errors.LifetimeLeakageExhausted,
    quota_errors.LifetimeRowsExhausted,
    quota_errors.ReleaseRateExceeded,
    # a partner suspended for tripping hard rules (service.sanctions)
    sanction_errors.PartnerSuspended,
    # `"target": "twin"`: the versions' twin or stand-in missing, the partner's twin jobs of the day spent
    twin_errors.TwinNotAvailable,
    quota_errors.TwinQuotaExhausted,
    # a twin job and a real job of one partner never run at once
    errors.RealJobInProgress,
    errors.TwinJobInProgress,
)
def submit_job(
    body: JobCreate,
    response: Response,
    caller: Partner,
    session: SessionDep,
    settings: SettingsDep,
    budgets: BudgetsDep,
    dispatcher: DispatcherDep,
    dry_run: bool = False,
) -> JobRead | JobPreview:
    """Submit an evaluation job; the same release asked for again returns the earlier job. With
    `dry_run=true`: what it would spend and leave, and whether it would be admitted now. With
    `"target": "twin"`: run it on the synthetic twin and stand-in, at no privacy cost."""
    on_twin = body.target == JobTarget.TWIN
    if dry_run:
        response.status_code = 200
        try:  # a bad request answers as its submission would; nothing is recorded either way
            return (twin.preview if on_twin else admission.preview)(session, settings, budgets, caller, body)
        finally:
            session.rollback()
    if on_twin:
        job = twin.admit(session, settings, budgets, dispatcher, caller, body)
        return to_read(session, job, caller, settings.timing_buckets_s)
    job, reused = admission.admit(session, settings, budgets, dispatcher, caller, body)
    if reused:
        response.status_code = 200
    return to_read(session, job, caller, settings.timing_buckets_s, reused=reused)


@router.get("", response_model=JobList)
def list_jobs(
    caller: AnyCaller, session: SessionDep, settings: SettingsDep, state: JobState | None = None, limit: int = 100
) -> JobList:
    """Jobs the caller may see, newest first."""
    return JobList(jobs=listing(session, caller, settings.timing_buckets_s, state, max(1, min(limit, 500))))


@router.get("/{job_id}", response_model=JobRead)
@raises(errors.JobNotFound)
def read_job(job_id: str, caller: AnyCaller, session: SessionDep, settings: SettingsDep) -> JobRead:
    """One job, with its released result if any."""
    # Not VisibleJob: the API's most frequent read, in one thread hop and one query.
    job, result, request = read_visible(session, caller, job_id)
    released, requests = ({} if result is None else {job.id: result}), ({} if request is None else {job.id: request})
    return to_read(session, job, caller, settings.timing_buckets_s, released=released, requests=requests)


@router.post("/{job_id}/cancel", response_model=JobRead)
@raises(errors.JobFinished)
def cancel_job(
    job: VisibleJob, caller: PartnerOrOperator, session: SessionDep, settings: SettingsDep, budgets: BudgetsDep
) -> JobRead:
    """Cancel a job; a running one is stopped by its worker."""
    return to_read(session, jobs_service.cancel(session, budgets, caller, job), caller, settings.timing_buckets_s)
