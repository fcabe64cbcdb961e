"""Handing a committed job id to a worker: Celery over Redis, or in-process threads (embedded).

The one rule: a job id is enqueued only after the transaction that made the job runnable has
committed (`commit_then_enqueue`), so a worker always finds the row it was told about.

Two lanes: real jobs, and twin jobs (service.jobs.twin), each with its own queue and its own workers
(threads, embedded). A twin job's partner sees when it leaves the queue, unpadded, and reads what
its code prints; sharing workers with real jobs, it would tell when the real jobs before it really
ended. In its own lane it waits only behind other twin jobs, which hold nothing private.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from celery import Celery
from sqlalchemy.orm import Session

from service.config import Settings
from service.observability import logs

log = logging.getLogger(__name__)
TASK_RUN = "jobs.run"


class Dispatcher(Protocol):
    def enqueue(self, job_id: str, twin: bool = False) -> None:
        """Hand the job to a worker of its lane (`twin`: a twin job's)."""
        ...

    def waiting(self) -> set[str]:
        """The jobs handed over and not yet taken by a worker (for the reconciler, jobs.recovery)."""
        ...

    def close(self) -> None: ...


def commit_then_enqueue(session: Session, dispatcher: Dispatcher, job_ids: Iterable[str], twin: bool = False) -> None:
    """Commit the caller's transaction, then hand each job to a worker (of the twin lane: `twin`). A
    broker that is away loses nothing: the job is committed, and the reconciler (jobs.recovery) hands
    it over later."""
    session.commit()
    for job_id in job_ids:
        logs.bind(job_id=job_id)  # the request that made it runnable: its lines name the job
        try:
            dispatcher.enqueue(job_id, twin)
            log.info("job %s handed to a worker", job_id)
        except Exception:
            log.warning(
                "job %s is committed but the broker did not take it; the reconciler will", job_id, exc_info=True
            )


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
        # A broker that is away must not hold an API request for long: the job is committed, and
        # the reconciler hands it over when the broker is back.
        broker_connection_timeout=3,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    )
    return app


class CeleryDispatcher:
    def __init__(self, settings: Settings):
        self.app = make_celery(settings)
        self.queue, self.twin_queue = settings.queue, settings.twin_queue
        self.broker_url = settings.broker_url

    def enqueue(self, job_id: str, twin: bool = False) -> None:
        # The task id starts with the job id, so `waiting` can tell which jobs have a message.
        queue = self.twin_queue if twin else self.queue
        self.app.send_task(TASK_RUN, args=[job_id], task_id=f"{job_id}.{secrets.token_hex(4)}", queue=queue)

    def waiting(self) -> set[str]:
        """Jobs with a message in either lane's queue (Redis: a list per priority level, named after
        the queue). Messages a worker has taken are not counted: if that worker died, the job must be
        handed over again, and if it lives, the duplicate is harmless."""
        import redis

        assert self.broker_url is not None
        client = redis.Redis.from_url(self.broker_url, socket_timeout=5, socket_connect_timeout=3)
        found: set[str] = set()
        try:
            keys = [k for q in (self.queue, self.twin_queue) for k in (q, *(f"{q}\x06\x16{p}" for p in range(1, 10)))]
            for key in keys:
                messages: list[bytes] = client.lrange(key, 0, -1)  # type: ignore[assignment]  # sync client
                for raw in messages:
                    task_id = str(json.loads(raw).get("headers", {}).get("id", ""))
                    found.add(task_id.split(".", 1)[0])
        finally:
            client.close()
        return found

    def close(self) -> None:
        pass


class EmbeddedDispatcher:
    """Worker threads inside the API process, one per lane: the one-machine mode that needs no Redis."""

    def __init__(self, run: Callable[[str], object]):
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalgate-worker")
        self._twin_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalgate-twin-worker")
        self._waiting: set[str] = set()
        self._lock = threading.Lock()

    def enqueue(self, job_id: str, twin: bool = False) -> None:
        with self._lock:
            self._waiting.add(job_id)
        (self._twin_pool if twin else self._pool).submit(self._safe_run, job_id)

    def waiting(self) -> set[str]:
        with self._lock:
            return set(self._waiting)

    def _safe_run(self, job_id: str) -> None:
        with self._lock:
            self._waiting.discard(job_id)
        try:
            self._run(job_id)
        except Exception:
            log.exception("job %s failed in the embedded worker", job_id)

    def close(self) -> None:
        for pool in (self._pool, self._twin_pool):
            pool.shutdown(wait=False, cancel_futures=True)
