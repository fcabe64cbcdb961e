"""What each caller may see of a job. Partners see the state and the error class only (container
output never appears here); a job that ran finishes for them at its padded time, not before; and
`gating` shows as `running` (when the sandbox stopped is the run time, a side channel)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from service.auth.roles import Role
from service.auth.service import Caller
from service.jobs.models import Job
from service.jobs.schemas import JobRead, ResultRead
from service.jobs.states import TERMINAL, JobState
from service.release import service as release_service
from service.release import timing
from service.release.models import Result


def to_read(
    session: Session,
    job: Job,
    caller: Caller,
    buckets: list[float],
    released: dict[str, Result] | None = None,
    reused: bool = False,
) -> JobRead:
    """`released` holds results already loaded for a page of jobs."""
    state, error_class, started, finished = job.state, job.error_class, job.started_at, job.finished_at
    if caller.role == Role.PARTNER:
        started = None  # when a job left the queue says how long other jobs ran
        if state == JobState.GATING:
            state = JobState.RUNNING
        if state in TERMINAL and job.started_at is not None and job.finished_at is not None:
            finished = timing.visible_at(job.created_at, job.finished_at, buckets)
            if datetime.now(UTC) < finished:
                state, error_class, finished = JobState.RUNNING, None, None
    result = None
    if state == JobState.RELEASED:
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
