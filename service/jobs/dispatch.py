"""Handing a committed job id to a worker: Celery over Redis, or one in-process thread (embedded)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class CeleryDispatcher:
    def __init__(self, settings):
        from service.worker import make_celery

        self.app = make_celery(settings.broker_url, settings)

    def enqueue(self, job_id: str) -> None:
        self.app.send_task("jobs.run", args=[job_id])

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
