"""Handing a committed job id to a worker: Celery over Redis, or one in-process thread (embedded).

The one rule: a job id is enqueued only after the transaction that made the job runnable has
committed (`commit_then_enqueue`), so a worker always finds the row it was told about.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from celery import Celery
from sqlalchemy.orm import Session

from service.config import Settings

log = logging.getLogger(__name__)
TASK_RUN = "jobs.run"


class Dispatcher(Protocol):
    def enqueue(self, job_id: str) -> None: ...

    def close(self) -> None: ...


def commit_then_enqueue(session: Session, dispatcher: Dispatcher, job_ids: Iterable[str]) -> None:
    """Commit the caller's transaction, then hand each job to a worker."""
    session.commit()
    for job_id in job_ids:
        dispatcher.enqueue(job_id)


def make_celery(settings: Settings) -> Celery:
    """The Celery app of the API (to send) and of the worker (to run), configured alike."""
    app = Celery("evalgate", broker=settings.broker_url, include=["service.jobs.tasks"])
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


class CeleryDispatcher:
    def __init__(self, settings: Settings):
        self.app = make_celery(settings)

    def enqueue(self, job_id: str) -> None:
        self.app.send_task(TASK_RUN, args=[job_id])

    def close(self) -> None:
        pass


class EmbeddedDispatcher:
    """One worker thread inside the API process: the one-machine mode that needs no Redis."""

    def __init__(self, run: Callable[[str], object]):
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalgate-worker")

    def enqueue(self, job_id: str) -> None:
        self._pool.submit(self._safe_run, job_id)

    def _safe_run(self, job_id: str) -> None:
        try:
            self._run(job_id)
        except Exception:
            log.exception("job %s failed in the embedded worker", job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
