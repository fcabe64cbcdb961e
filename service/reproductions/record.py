"""How a reproduction ends: its outcome, once, on the ledger and as a leaf of the transparency log.

Below the jobs domain (jobs.service.end calls `run_ended`, so no path can end a reproduction's run
and leave its reproduction open); imports models, the ledger and the log only.

The log's leaf is a commitment, as a release's is: `{"kind": "reproduction", "record_sha256": ...}`
over the record a researcher reads with the reproduction (`log_record`): the reproduction's and the
job's random ids, the original release's leaf index, the outcome and the reason. It says that a
reproduction ended and how, and lets a reader check that the log holds what the page shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.canonical import canonical_json, sha256_hex
from service.db import utcnow
from service.ledger import service as ledger
from service.release import timing
from service.release.models import Result
from service.release.outcomes import ErrorClass
from service.reproductions.models import CouldNotRun, Outcome, Reproduction
from service.transparency import service as tlog

if TYPE_CHECKING:
    from service.jobs.models import Job

LEAF = "reproduction"


def leaf(record: Mapping[str, object]) -> bytes:
    return canonical_json({"kind": LEAF, "record_sha256": sha256_hex(canonical_json(record))}).encode()


def conclude(
    session: Session,
    reproduction: Reproduction,
    outcome: Outcome,
    *,
    actor: str,
    reason: CouldNotRun | None = None,
    error_class: ErrorClass | None = None,
) -> bool:
    """Record the outcome, unless one is recorded already (then False: a redelivered task, or the
    run's ending after its comparison)."""
    if reproduction.outcome is not None:
        return False
    reproduction.outcome, reproduction.reason, reproduction.error_class = outcome, reason, error_class
    reproduction.finished_at = utcnow()
    release_leaf = session.execute(select(Result.leaf_index).where(Result.job_id == reproduction.job_id)).scalar()
    record = {
        "reproduction_id": reproduction.id,
        "job_id": reproduction.job_id,
        "release_leaf_index": release_leaf,
        "outcome": str(outcome),
        "reason": None if reason is None else str(reason),
    }
    reproduction.log_record = record
    reproduction.leaf_index = tlog.append(session, LEAF, leaf(record))
    ledger.append(
        session,
        actor=actor,
        action="reproduction.concluded",
        subject=f"job:{reproduction.job_id}",
        data={**record, "error_class": error_class, "leaf_index": reproduction.leaf_index},
    )
    session.flush()
    return True


def run_ended(session: Session, run_id: str, error_class: ErrorClass | None, *, actor: str) -> None:
    """A reproduction's run has ended: if nothing was concluded for it (the worker died, its sandbox
    could not be prepared, the run failed), it could not run, and says with which error class."""
    reproduction = session.get(Reproduction, run_id)
    if reproduction is None or reproduction.outcome is not None:
        return
    conclude(
        session,
        reproduction,
        Outcome.COULD_NOT_RUN,
        actor=actor,
        reason=CouldNotRun.RUN_FAILED,
        error_class=error_class or ErrorClass.INTERNAL_ERROR,
    )


def shown_to_partner_at(r: Reproduction, job: Job, buckets: list[float]) -> datetime | None:
    """When the job's partner may see how a reproduction ended: no earlier than the job's own time
    limit (padded) after it was asked, whatever the re-run did, so the time carries nothing its code
    chose; a run that ended later still (it waited for a worker) at its padded end."""
    if r.finished_at is None:
        return None
    hold = timing.padded_duration(float(job.spec["resources"]["timeout_s"]), buckets)
    return max(r.created_at + timedelta(seconds=hold), timing.visible_at(r.created_at, r.finished_at, buckets))
