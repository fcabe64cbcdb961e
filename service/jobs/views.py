"""What each caller may see of a job. Operators and researchers see it as it is. A partner sees the
state and the error class only (container output never appears here), and a job of its changes
state only when the partner itself acts (submits, cancels before it started) or an operator does
(approves its suite), and at its padded completion time:
- from admission until then it is `running` (when it left the queue, or when its sandbox stopped,
  would say how long other jobs ran, or how long this one did);
- then it ends as it ended, or as `cancelled` if its partner asked to cancel it before then (whether
  it had already ended when asked would say when it ended). Its release, if it made one, is then
  never shown to its partner.
A twin job (service.jobs.twin) involves nothing private: its partner sees it as it is, with its
stdout, stderr and the release gate's verdict (`twin`), which a real job never shows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from service.approvals import repository as approvals_repo
from service.approvals.models import ApprovalRequest
from service.approvals.schemas import ApprovalBrief
from service.auth.roles import Role
from service.auth.service import Caller
from service.jobs import repository as repo
from service.jobs.models import Job
from service.jobs.schemas import JobRead, ResultRead, TwinRun
from service.jobs.states import TERMINAL, JobState, JobTarget
from service.registry.schemas import LicenseRead
from service.release import service as release_service
from service.release import timing
from service.release.models import Result
from service.release.outcomes import ADVICE, ErrorClass


def to_read(
    session: Session,
    job: Job,
    caller: Caller,
    buckets: list[float],
    released: dict[str, Result] | None = None,
    reused: bool = False,
    requests: dict[str, ApprovalRequest] | None = None,
) -> JobRead:
    """`released` and `requests` hold results and approval requests already loaded for a page of jobs."""
    state, error_class, started, finished = job.state, job.error_class, job.started_at, job.finished_at
    if caller.role == Role.PARTNER:
        started = None
        state, error_class, finished = partner_view(job, buckets)
    result = None
    if state == JobState.RELEASED:
        r = released.get(job.id) if released is not None else release_service.existing(session, job.id)
        if r is not None:
            result = ResultRead(
                metrics=r.metrics,
                disclosure=r.disclosure,
                provenance=r.provenance,
                released_at=finished or r.created_at,
                # Partners do not see the ledger position: it counts every partner's events.
                attestation={"signature": r.signature, "key_id": r.key_id}
                | ({} if caller.role == Role.PARTNER else {"ledger_seq": r.ledger_seq}),
            )
    return JobRead(
        id=job.id,
        state=state,
        error_class=error_class,
        advice=ADVICE.get(error_class) if error_class is not None else None,
        spec=job.spec,
        spec_sha256=job.spec_sha256,
        created_at=job.created_at,
        started_at=started,
        finished_at=finished,
        result=result,
        reused=reused,
        approval=_approval(session, job, requests),
        # Set by an operator (fixed), shown as they are now; a release signs those it was made under.
        licenses={"model": _license(job.model.license), "dataset": _license(job.dataset.license)},
        target=job.target,
        # A twin job's output is its partner's (and its operators'): researchers read releases, not logs.
        twin=_twin_run(job) if caller.role != Role.RESEARCHER else None,
    )


def _twin_run(job: Job) -> TwinRun | None:
    """A twin job's output and verdict, once its sandbox has stopped; never anything of a real job."""
    if job.target != JobTarget.TWIN or not job.twin_report:
        return None
    return TwinRun.model_validate(job.twin_report)


def _approval(session: Session, job: Job, requests: dict[str, ApprovalRequest] | None) -> ApprovalBrief | None:
    found = requests.get(job.id) if requests is not None else approvals_repo.for_job(session, job.id)
    return ApprovalBrief.model_validate(found) if found is not None else None


def _license(terms: dict[str, Any] | None) -> LicenseRead | None:
    return LicenseRead.model_validate(terms) if terms else None


def listing(
    session: Session, caller: Caller, buckets: list[float], state: JobState | None, limit: int
) -> list[JobRead]:
    """The jobs the caller may see, newest first, as it may see them. A partner's filter applies to
    the states it is shown (padded), not the stored ones."""
    partner = caller.role == Role.PARTNER
    jobs = repo.listing(
        session,
        principal_id=caller.principal_id if partner else None,
        state=None if partner else state,
        limit=500 if state and partner else limit,
    )
    released = release_service.for_jobs(session, [j.id for j in jobs if j.state == JobState.RELEASED])
    requests = approvals_repo.for_jobs(session, [j.id for j in jobs])
    views = [to_read(session, j, caller, buckets, released, requests=requests) for j in jobs]
    return [v for v in views if state is None or v.state == state][:limit]


def padded_end(job: Job, buckets: list[float]) -> datetime | None:
    """When its partner sees a real job end: padded, for a job that started, or that its partner
    cancelled while it was queued (whether it had started is hidden, service.jobs.service.cancel).
    None for an ending its partner sees at once (awaiting approval, then cancelled or denied)."""
    if job.finished_at is None or (job.started_at is None and not job.cancel_requested):
        return None
    return timing.visible_at(job.created_at, job.finished_at, buckets)


def partner_view(job: Job, buckets: list[float], now: datetime | None = None) -> tuple[JobState, Any, Any]:
    """(state, error class, finished at) as the job's partner sees them now."""
    if job.target == JobTarget.TWIN:  # nothing private: neither its states nor its times are padded
        return job.state, job.error_class, job.finished_at
    if job.state == JobState.AWAITING_APPROVAL:
        return job.state, None, None
    if job.state not in TERMINAL:
        return JobState.RUNNING, None, None
    padded = padded_end(job, buckets)
    if padded is not None and (now or datetime.now(UTC)) < padded:
        return JobState.RUNNING, None, None
    finished = padded or job.finished_at
    if job.cancel_requested and job.state != JobState.CANCELLED:
        return JobState.CANCELLED, ErrorClass.CANCELLED, finished
    return job.state, job.error_class, finished
