"""The Celery app and the worker's context (DB, Docker, signing key)."""

from __future__ import annotations

import logging
import threading

from celery import Celery, signals

from service.config import Settings, get_settings
from service.db import make_engine, make_sessionmaker, migrate, session_scope

log = logging.getLogger(__name__)


def make_celery(broker_url: str | None, settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("evalgate", broker=broker_url, include=["service.jobs.tasks"])
    app.conf.update(
        task_acks_late=True,  # a job is acknowledged only after it ran: a lost worker means redelivery
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # jobs are long; never hoard them
        task_soft_time_limit=settings.longest_job_s,
        task_time_limit=settings.longest_job_s + 60,
        # Longer than the longest job, or Redis would hand a running job to a second worker.
        broker_transport_options={"visibility_timeout": settings.longest_job_s + 600},
        task_ignore_result=True,  # job state lives in the DB
        task_default_queue=settings.queue,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


celery_app = make_celery(get_settings().broker_url)

_ctx = None
_ctx_lock = threading.Lock()


def build_context(settings: Settings):
    from service.jobs.runner import WorkerContext
    from service.quotas.store import make_quota
    from service.release.signing import Signer
    from service.sandbox.client import docker_client
    from service.sandbox.runner import Sandbox
    from service.sandbox.runtimes import resolve

    engine = make_engine(settings.database_url)
    client = docker_client()
    runtime = resolve(client, settings.docker_runtime)
    sessions = make_sessionmaker(engine)
    return WorkerContext(
        settings=settings,
        sessions=sessions,
        sandbox=Sandbox(client, deployment=settings.queue),
        signer=Signer.load_or_create(settings.signing_key_path),
        runtime=runtime,
        quota=make_quota(settings, sessions),
        bits=make_quota(settings, sessions, "millibits"),
    )


def worker_context():
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            _ctx = build_context(get_settings())
        return _ctx


def sweep_orphans(ctx) -> list[str]:
    """Remove sandbox leftovers of jobs that have ended or do not exist. Jobs still queued or running
    keep theirs: their task will be redelivered and resume."""
    from service.jobs.models import Job
    from service.jobs.states import TERMINAL

    def keep(job_id: str) -> bool:
        with session_scope(ctx.sessions) as s:
            job = s.get(Job, job_id)
            return job is not None and job.state not in TERMINAL

    removed = ctx.sandbox.sweep(keep)
    if removed:
        log.info("swept sandbox leftovers of %d jobs", len(removed))
    return removed


@signals.worker_ready.connect
def _on_worker_ready(**_kw):
    settings = get_settings()
    migrate(settings.database_url)
    sweep_orphans(worker_context())
