"""Celery tasks of the jobs domain."""

from __future__ import annotations

from celery import shared_task

from service.config import get_settings
from service.jobs.context import LazyContext, build_context
from service.jobs.dispatch import TASK_RUN
from service.jobs.runner import run_job

# The worker process's one context, built on the first job it receives.
context = LazyContext(lambda: build_context(get_settings()))


@shared_task(name=TASK_RUN, acks_late=True, reject_on_worker_lost=True)
def run(job_id: str) -> str | None:
    """Run one job to its end. Idempotent: safe to receive twice."""
    return run_job(context.get(), job_id)
