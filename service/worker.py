"""The Celery worker's entry point: the app (configured as the API's, in jobs.dispatch), the one
worker context of this process, and what happens when the worker is ready: the schema is brought up
to date, leftovers of dead workers are swept, and the recovery loop (reaper, reconciler, sweep;
jobs.recovery) starts."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from prometheus_client import start_http_server

from service.config import get_settings
from service.db import make_engine, migrate
from service.jobs import recovery, tasks
from service.jobs.context import Lazy, LazyContext, build_context
from service.jobs.dispatch import CeleryDispatcher, make_celery
from service.observability import logs, metrics
from service.schema import make_sessionmaker

settings = get_settings()
metrics.install()  # counts what this worker commits; served on EVALGATE_METRICS_PORT if set
celery_app = make_celery(settings)
context = LazyContext(lambda: build_context(settings, make_sessionmaker(make_engine(str(settings.database_url)))))
tasks.use_context(context)
_recovery = Lazy(lambda: recovery.for_worker(context.get(), CeleryDispatcher(settings)))
_loop: recovery.RecoveryLoop | None = None


@signals.setup_logging.connect  # type: ignore[untyped-decorator]  # Celery ships no type information
def _on_setup_logging(loglevel: str | int | None = None, **_kw: Any) -> None:
    """Connected, so Celery leaves logging to us: the same lines as the API's (JSON by default)."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    logs.configure(settings.log_format, str(level or settings.log_level), service="worker")


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _on_worker_ready(**_kw: Any) -> None:
    global _loop
    if settings.metrics_port is not None:
        # Unauthenticated, so it carries no per-partner value (service/observability/metrics.py).
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    migrate(str(settings.database_url))
    rec = _recovery.get()
    rec.sweep_leftovers()
    _loop = recovery.RecoveryLoop(_recovery.get, every_s=settings.lease_s / 2).start()


@signals.worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _on_shutdown(**_kw: Any) -> None:
    if _loop is not None:
        _loop.stop()
