"""The job state machine. Every transition is checked here and appended to the ledger."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.db import utcnow
from service.errors import Conflict
from service.jobs.models import Job
from service.ledger import service as ledger

TERMINAL = frozenset({"released", "rejected", "failed", "cancelled"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "submitted": frozenset({"awaiting_approval", "queued", "cancelled", "failed"}),
    "awaiting_approval": frozenset({"queued", "cancelled"}),
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"gating", "failed", "cancelled"}),
    "gating": frozenset({"released", "rejected", "failed"}),
}

# What a partner may be told when a job does not end in a release. Nothing else ever reaches them.
ERROR_CLASSES = frozenset(
    {
        "timeout",
        "oom",
        "crashed",
        "query_budget_exceeded",
        "output_rejected",
        "missing_output",
        "cancelled",
        "internal_error",
    }
)


def transition(
    session: Session, job: Job, to: str, *, actor: str, error_class: str | None = None, data: dict | None = None
) -> bool:
    """Move a job to `to`. Returns False (and does nothing) if it is already there, so a redelivered
    task can call this again safely. An impossible transition raises Conflict."""
    if job.state == to:
        return False
    if to not in TRANSITIONS.get(job.state, frozenset()):
        raise Conflict(f"job {job.id} is {job.state} and cannot become {to}", code="invalid_transition")
    if error_class is not None and error_class not in ERROR_CLASSES:
        raise ValueError(f"unknown error class {error_class}")
    frm, job.state = job.state, to
    now = utcnow()
    if to == "running":
        job.started_at = now
    if to in TERMINAL:
        job.finished_at = now
        job.error_class = error_class
    ledger.append(
        session,
        actor=actor,
        action="job.transition",
        subject=f"job:{job.id}",
        data={"from": frm, "to": to, "error_class": error_class, "spec_sha256": job.spec_sha256, **(data or {})},
    )
    session.flush()
    return True
