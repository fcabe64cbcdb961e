"""Celery tasks of the jobs domain."""

from __future__ import annotations

from service.jobs.runner import run_job
from service.worker import celery_app, worker_context


@celery_app.task(name="jobs.run", acks_late=True, reject_on_worker_lost=True)
def run(job_id: str) -> str | None:
    """Run one job to its end. Idempotent: safe to receive twice."""
    return run_job(worker_context(), job_id)
