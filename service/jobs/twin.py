"""Twin jobs (`"target": "twin"`): a job run on its dataset version's synthetic twin beside its model
version's stand-in (service.twins), in the same sandbox as a real job, judged by the same release gate
code (release.service.judge), and released nowhere.

Nothing private is involved (the twin and the stand-in are what GET …/twin gives any partner allowed
to use the originals), so a twin job spends no ε, bits, model rows or release slot, is not padded, and
shows its partner what a real job hides: its stdout and stderr (capped) and the gate's verdict. It
counts only against the partner's `twin_jobs_per_day` (a live limit, service.policies). Admission is
a real job's (the same names, metrics, policy checks and refusals), so the verdict also says what the
real job would cost; the twin and stand-in admitted are pinned by digest in the job's spec.

A twin job moves through the same states as a real one and ends where the gate would release it as
`judged` (states.py); the reaper, the reconciler and the leases treat it as any job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service.auth.service import Caller
from service.canonical import digest
from service.config import Settings
from service.errors import EvalgateError
from service.jobs import admission, errors
from service.jobs import repository as repo
from service.jobs.dispatch import Dispatcher, commit_then_enqueue
from service.jobs.models import Job
from service.jobs.schemas import JobCost, JobCreate, JobPreview, Refusal
from service.jobs.service import record_submitted, transition
from service.jobs.states import JobState, JobTarget
from service.quotas import errors as quota_errors
from service.quotas.service import Budgets
from service.quotas.store import seconds_to_reset
from service.registry import datasets, storage
from service.release import service as release_service
from service.release.outcomes import ErrorClass
from service.reproductions import record as reproduction_record
from service.sandbox.spec import Outcome
from service.twins import service as twins
from service.twins.models import TwinKind

# The gate's refusals of a result; any other error class means the job ended without one.
_REJECTIONS = frozenset({ErrorClass.OUTPUT_REJECTED, ErrorClass.MISSING_OUTPUT})


# -- admission -------------------------------------------------------------------------------------------


def _quota(session: Session, budgets: Budgets, caller: Caller) -> tuple[int, int]:
    """(twin jobs admitted today, the partner's daily limit now)."""
    since = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
    limit = budgets.limits(caller.name, session).twin_jobs_per_day
    return repo.twin_jobs_since(session, caller.principal_id, since), limit


def _exhausted(used: int, limit: int) -> quota_errors.TwinQuotaExhausted:
    return quota_errors.TwinQuotaExhausted(
        f"you have run {used} of your {limit} twin jobs today",
        alternatives=[
            "retry after 00:00 UTC",
            "run the suite on your own machine: evalgate dev run SUITE_DIR --model NAME@V --dataset NAME@V",
            "ask an operator for a larger twin_jobs_per_day",
        ],
        retry_after_s=seconds_to_reset(),
    )


def _draft(
    session: Session, settings: Settings, budgets: Budgets, caller: Caller, req: JobCreate
) -> tuple[admission.Draft, dict[str, Any]]:
    """A real job's admission checks, then the twin and stand-in it would run on (TwinNotAvailable if
    either is missing). An operator's approval is for private data: a twin job never waits for one."""
    d = admission.draft(session, settings, budgets, caller, req.model_copy(update={"request_approval": False}))
    dataset_ref = f"{d.spec['dataset']['name']}@{d.spec['dataset']['version']}"
    model_ref = f"{d.spec['model']['name']}@{d.spec['model']['version']}"
    dataset_twin = twins.twin_of(session, TwinKind.DATASET, d.dataset_id, dataset_ref)
    stand_in = twins.twin_of(session, TwinKind.MODEL, d.model_id, model_ref)
    pinned = {
        "dataset": {"sha256": dataset_twin.sha256, "origin": dataset_twin.origin},
        "model": {"sha256": stand_in.sha256, "origin": stand_in.origin},
        # The query budget asked for; none: the twin's own row count (found when it runs).
        "query_budget": req.resources.query_budget,
    }
    return d, pinned


def _alone(session: Session, budgets: Budgets, caller: Caller) -> errors.RealJobInProgress | None:
    """The refusal of a twin job while one of its partner's real jobs is in progress as the partner
    sees it (until its padded completion time): a twin job's output is its partner's, so it never
    runs beside a real job of its partner, whose code could signal to it through the host they share
    (CPU, caches). Judged from what the partner sees, so the refusal tells it nothing new."""
    active = budgets.jobs_in_progress(session, caller.principal_id)
    rerun = _open_reproduction(session, caller, budgets.settings.timing_buckets_s)
    if active == 0 and not rerun:
        return None
    what = f"{active} real job(s) in progress" if active else "a reproduction of one of your jobs on its way"
    return errors.RealJobInProgress(
        f"you have {what}; a twin job runs when none is",
        alternatives=[
            "retry when they have ended",
            "run the suite on your own machine: evalgate dev run SUITE_DIR --model NAME@V --dataset NAME@V",
        ],
    )


def _open_reproduction(session: Session, caller: Caller, buckets: list[float]) -> bool:
    """Whether a reproduction of one of the partner's jobs (a re-run of its code on the real data) is
    on its way as the partner sees it (its outcome not shown yet: reproductions.record)."""
    now = datetime.now(UTC)
    for r, job in repo.recent_reproductions_of(session, caller.principal_id):
        shown = reproduction_record.shown_to_partner_at(r, job, buckets)
        if shown is None or now < shown:
            return True
    return False


def submit(session: Session, settings: Settings, budgets: Budgets, caller: Caller, req: JobCreate) -> Job:
    """Record an admitted twin job, queued. Nothing is reserved: its only cost is one of today's twin jobs."""
    d, pinned = _draft(session, settings, budgets, caller, req)
    beside = _alone(session, budgets, caller)
    if beside is not None:
        raise beside
    used, limit = _quota(session, budgets, caller)
    if used >= limit:
        raise _exhausted(used, limit)
    job_id = str(uuid.uuid4())
    spec = d.spec | {"target": JobTarget.TWIN.value, "twin": pinned}
    job = record_submitted(
        session,
        job_id=job_id,
        principal_id=caller.principal_id,
        spec=spec,
        # Its own: a twin job is never "the same release" as another job, real or twin.
        release_key=digest({"twin": job_id}),
        suite_version_id=d.suite.id,
        model_version_id=d.model_id,
        dataset_version_id=d.dataset_id,
        actor=caller.actor,
        target=JobTarget.TWIN,
        data={"spec": spec, "twin_jobs_today": used + 1, "twin_jobs_per_day": limit},
    )
    transition(session, job, JobState.QUEUED, actor="admission")
    return job


def admit(
    session: Session, settings: Settings, budgets: Budgets, dispatcher: Dispatcher, caller: Caller, req: JobCreate
) -> Job:
    """As admission.admit: under the partner's admission lock (so the day's count is exact), committed,
    then handed to a worker; a refusal is recorded and raised."""
    try:
        with budgets.admission(caller.principal_id):
            job = submit(session, settings, budgets, caller, req)
            commit_then_enqueue(session, dispatcher, [job.id], twin=True)
    except EvalgateError as e:
        session.rollback()
        admission.record_refusal(session, settings, caller, e.code, req)
        session.commit()
        raise
    return job


def preview(session: Session, settings: Settings, budgets: Budgets, caller: Caller, req: JobCreate) -> JobPreview:
    """A twin job's dry run: it would cost nothing but one of today's twin jobs; how many are left.
    A bad request raises the refusal its submission would; the caller rolls back."""
    d, _ = _draft(session, settings, budgets, caller, req)
    used, limit = _quota(session, budgets, caller)
    refused = _alone(session, budgets, caller) or (_exhausted(used, limit) if used >= limit else None)
    refusal = None if refused is None else Refusal(**refused.to_dict())
    nothing = JobCost(
        epsilon_per_metric=0.0,
        epsilon_total=0.0,
        noised_metrics=[],
        leakage_bits=0.0,
        model_rows=int(d.plan.rows),
        model_rows_granted=0,
    )
    return JobPreview(
        admitted=refusal is None,
        state=JobState.QUEUED if refusal is None else None,
        cost=nothing,
        refusal=refusal,
        twin_jobs_left=max(0, limit - used - (1 if refusal is None else 0)),
    )


# -- the worker's side -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Files:
    """What a twin job's sandbox runs on, from the twins' own blob store."""

    dataset: Path  # the twin (features and labels), which only the gate reads whole
    job_dataset: Path  # what the job container is given: the twin, or its features only (rows mode)
    model: Path  # the stand-in
    rows: int  # the twin's rows


def files(settings: Settings, job: Job) -> Files:
    """The pinned twin and stand-in (a FileNotFoundError if either is gone: an internal error)."""
    store = twins.store_dir(settings)
    pinned = job.spec["twin"]
    dataset = storage.blob_path(store, pinned["dataset"]["sha256"])
    model = storage.blob_path(store, pinned["model"]["sha256"])
    for path in (dataset, model):
        if not path.is_file():
            raise FileNotFoundError(f"the twin file {path.name} is gone from the twins' store")
    job_dataset = dataset
    if job.spec.get("mode") == "rows":  # the job's code never sees the labels, on a twin either
        job_dataset = storage.blob_path(store, datasets.store_features(store, dataset))
    return Files(dataset, job_dataset, model, len(datasets.labels(dataset)))


def query_budget(job: Job, twin_rows: int) -> int:
    return int(job.spec["twin"].get("query_budget") or twin_rows)


def report(outcome: Outcome, cap: int) -> dict[str, Any]:
    """What the partner is shown of the sandbox's run (before the gate's verdict)."""
    return {
        "stdout": (outcome.stdout or "")[:cap],
        "stderr": (outcome.stderr or "")[:cap],
        "exit_code": outcome.exit_code,
        "oom": outcome.oom,
        "timed_out": outcome.timed_out,
        "usage": {k: outcome.usage[k] for k in ("rows", "requests", "budget_exceeded") if k in outcome.usage},
    }


def conclude(
    session: Session, settings: Settings, job: Job, case: release_service.Case, outcome: Outcome
) -> tuple[ErrorClass | None, str]:
    """Judge the result as the gate would a real job's, record the verdict for the partner, release
    nothing. Returns the error class the job ends with (None: judged) and a note for operators."""
    judged = release_service.judge(session, settings, case, outcome)
    privacy = job.spec["privacy"]
    verdict: dict[str, Any] = {
        "error_class": judged.error_class,
        "would_cost": {
            "epsilon_per_metric": privacy["epsilon_per_metric"],
            "epsilon_total": privacy["epsilon_total"],
            "noised_metrics": privacy["noised_metrics"],
            "leakage_bits": job.spec["leakage_bits"],
        },
    }
    if judged.error_class is None:
        assert judged.gated is not None
        verdict |= {
            "outcome": "released",
            "metrics": judged.gated.metrics,
            "disclosure": judged.gated.disclosure(job.spec["leakage_bits"]),
        }
    elif judged.error_class in _REJECTIONS:
        verdict |= {"outcome": "rejected", "reason": _reason(judged, outcome)}
    else:
        verdict |= {"outcome": "failed", "reason": _reason(judged, outcome)}
    job.twin_report = {**(job.twin_report or {}), "verdict": verdict}  # a new dict: the JSON column sees it
    return judged.error_class, judged.note


def _reason(judged: release_service.Judgement, outcome: Outcome) -> str:
    if judged.note:
        return judged.note.removeprefix("[gate] ").removeprefix("[rows] ")
    match judged.error_class:
        case ErrorClass.MISSING_OUTPUT:
            return "the job wrote no result file"
        case ErrorClass.OUTPUT_REJECTED:
            return f"the sandbox refused the result file: {outcome.result_problem}"
        case ErrorClass.CRASHED:
            return f"the job exited with code {outcome.exit_code}: see its stderr"
        case ErrorClass.TIMEOUT:
            return "the job ran past its time limit"
        case ErrorClass.OOM:
            return "the job ran out of memory"
        case ErrorClass.QUERY_BUDGET_EXCEEDED:
            return "the job asked the model for more rows or requests than its query budget"
    return str(judged.error_class)
