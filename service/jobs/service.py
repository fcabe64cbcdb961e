"""Admission and the partner-facing job operations."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import __version__
from service.auth.service import Caller
from service.canonical import digest
from service.config import Settings
from service.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from service.jobs.models import Job
from service.jobs.schemas import JobCreate
from service.jobs.states import TERMINAL, transition
from service.ledger import service as ledger
from service.quotas.store import seconds_to_reset
from service.registry import service as registry


def _resources(req: JobCreate, settings: Settings, caller: Caller) -> dict:
    r = req.resources
    chosen = {
        "memory_mb": r.memory_mb or settings.default_memory_mb,
        "cpus": r.cpus or settings.default_cpus,
        "timeout_s": r.timeout_s or settings.default_timeout_s,
        "query_budget": r.query_budget or settings.default_query_budget,
    }
    ceilings = {"memory_mb": settings.max_memory_mb, "cpus": settings.max_cpus, "timeout_s": settings.max_timeout_s,
                "query_budget": settings.partner_limit(caller.name, "max_query_budget")}
    over = [f"{k} <= {ceilings[k]}" for k, v in chosen.items() if v > ceilings[k]]
    if over:
        raise InvalidInput("requested resources exceed your limits", code="resources_exceed_limit", alternatives=over)
    return chosen


def submit(session: Session, settings: Settings, caller: Caller, req: JobCreate, rows_used_today: int = 0) -> Job:
    """Validate a job against the registry and the caller's limits and record it. The caller commits
    and only then enqueues the id."""
    if rows_used_today >= settings.partner_limit(caller.name, "rows_per_day"):
        raise TooManyRequests("today's model query budget is spent", code="daily_query_budget_exhausted",
                              alternatives=[f"the budget resets at 00:00 UTC, in {seconds_to_reset()} s"])
    suite = registry.visible_suite(session, req.suite, caller.principal_id, caller.role)
    model = registry.usable_model(session, req.model)
    dataset = registry.resolve_dataset(session, req.dataset)
    unknown = [m for m in req.metrics if m not in suite.metrics]
    if unknown or len(set(req.metrics)) != len(req.metrics):
        raise InvalidInput(f"metrics {unknown or req.metrics} are not declared once each by suite {suite.ref}",
                           code="undeclared_metric", alternatives=list(suite.metrics))
    if dataset.rows < settings.min_dataset_rows:
        raise InvalidInput(f"dataset {dataset.ref} has fewer than {settings.min_dataset_rows} rows",
                           code="dataset_too_small", alternatives=["choose a larger dataset"])
    spec = {
        "suite": {"name": suite.name, "version": suite.version, "sha256": suite.sha256},
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "dataset": {"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256},
        "metrics": sorted(req.metrics),
        "resources": _resources(req, settings, caller),
        "seed": req.seed,
        "service_version": __version__,
    }
    job = Job(id=str(uuid.uuid4()), principal_id=caller.principal_id, state="submitted", spec=spec,
              spec_sha256=digest(spec), suite_version_id=suite.id, model_version_id=model.id,
              dataset_version_id=dataset.id)
    session.add(job)
    session.flush()
    ledger.append(session, actor=caller.actor, action="job.submitted", subject=f"job:{job.id}",
                  data={"spec_sha256": job.spec_sha256, "spec": spec})
    transition(session, job, "queued" if suite.approved else "awaiting_approval", actor="admission")
    return job


def get_visible(session: Session, caller: Caller, job_id: str) -> Job:
    """A partner sees only its own jobs; another partner's id is 'not found', never 'forbidden'."""
    job = session.get(Job, job_id)
    if job is None or (caller.role == "partner" and job.principal_id != caller.principal_id):
        raise NotFound(f"no job {job_id}", code="job_not_found")
    return job


def list_visible(session: Session, caller: Caller, *, state: str | None = None, limit: int = 100) -> list[Job]:
    q = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if caller.role == "partner":
        q = q.where(Job.principal_id == caller.principal_id)
    if state:
        q = q.where(Job.state == state)
    return list(session.execute(q).scalars())


def cancel(session: Session, caller: Caller, job_id: str) -> Job:
    """Before it runs a job is cancelled at once; a running job is stopped by its worker."""
    job = get_visible(session, caller, job_id)
    if job.state in TERMINAL:
        if job.state == "cancelled":
            return job
        raise Conflict(f"job {job_id} already ended as {job.state}", code="job_finished")
    if job.state in ("submitted", "awaiting_approval", "queued"):
        transition(session, job, "cancelled", actor=caller.actor, error_class="cancelled")
    elif not job.cancel_requested:
        job.cancel_requested = True
        ledger.append(session, actor=caller.actor, action="job.cancel_requested", subject=f"job:{job.id}")
    return job


def queue_approved(session: Session, suite_id: int, actor: str) -> list[str]:
    """After a suite is approved, move its waiting jobs to the queue. Returns ids to enqueue after commit."""
    waiting = session.execute(select(Job).where(Job.suite_version_id == suite_id, Job.state == "awaiting_approval")).scalars()
    ids = []
    for job in waiting:
        transition(session, job, "queued", actor=actor)
        ids.append(job.id)
    return ids


def unfinished_ids(session: Session) -> list[str]:
    rows = session.execute(select(Job.id).where(Job.state.in_(("queued", "running", "gating"))).order_by(Job.created_at))
    return list(rows.scalars())
