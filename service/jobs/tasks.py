"""Celery tasks of the jobs domain."""

from __future__ import annotations

from celery import shared_task

from service.jobs.context import LazyContext
from service.jobs.dispatch import TASK_RUN
from service.jobs.runner import run_job
from service.observability.work import run_observed

# The worker process's one context, handed over by its entry point (service/worker.py), which
# knows the settings and the database; built on the first job the process receives.
_context: LazyContext | None = None


def use_context(context: LazyContext) -> None:
    global _context
    _context = context


# Celery ships no type information, so its decorators are untyped.
@shared_task(name=TASK_RUN, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def run(job_id: str) -> str | None:
    """Run one job to its end. Idempotent: safe to receive twice."""
    if _context is None:
        raise RuntimeError("no worker context: run jobs through `evalgate worker` (service.worker)")
    ctx = _context.get()
    return run_observed(ctx.sessions, job_id, lambda: run_job(ctx, job_id))
