"""The Celery worker's entry point: the app (configured as the API's, in jobs.dispatch), the one
worker context of this process, and what happens when the worker is ready."""

from __future__ import annotations

from typing import Any

from celery import signals

from service.config import get_settings
from service.db import make_engine, migrate
from service.jobs import tasks
from service.jobs.context import LazyContext, build_context
from service.jobs.dispatch import make_celery
from service.jobs.runner import sweep_orphans
from service.schema import make_sessionmaker

settings = get_settings()
celery_app = make_celery(settings)
context = LazyContext(lambda: build_context(settings, make_sessionmaker(make_engine(str(settings.database_url)))))
tasks.use_context(context)


@signals.worker_ready.connect  # type: ignore[untyped-decorator]  # Celery ships no type information
def _on_worker_ready(**_kw: Any) -> None:
    """Bring the schema up to date and remove what dead workers of this deployment left behind."""
    migrate(str(settings.database_url))
    sweep_orphans(context.get())
