"""The Celery worker: the app (configured as the API's, in jobs.dispatch) and its start-up."""

from __future__ import annotations

from typing import Any

from celery import signals

from service.config import get_settings
from service.db import migrate
from service.jobs.dispatch import make_celery
from service.jobs.runner import sweep_orphans
from service.jobs.tasks import context

celery_app = make_celery(get_settings())


@signals.worker_ready.connect
def _on_worker_ready(**_kw: Any) -> None:
    """Bring the schema up to date and remove what dead workers of this deployment left behind."""
    migrate(str(get_settings().database_url))
    sweep_orphans(context.get())
