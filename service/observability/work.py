"""A worker's side of the logs: each job it takes is a unit of work, so every line logged while it
runs the job (the state machine, the sandbox, the gate, in the Celery worker or the API's embedded
thread) carries the job's id and its partner, as the API's lines about the same job do."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.auth.models import Principal
from service.jobs.models import Job
from service.observability.logs import scope as logs_scope

log = logging.getLogger("evalgate.worker")
T = TypeVar("T")


def _partner(sessions: sessionmaker[Session], job_id: str) -> str | None:
    try:
        with sessions() as s:
            return s.execute(
                select(Principal.name).join(Job, Job.principal_id == Principal.id).where(Job.id == job_id)
            ).scalar_one_or_none()
    except Exception:  # the job's own steps report a database that is away; a log field must not
        return None


@contextmanager
def job_scope(sessions: sessionmaker[Session], job_id: str) -> Iterator[None]:
    with logs_scope(job_id=job_id, partner=_partner(sessions, job_id)):
        yield


def run_observed(sessions: sessionmaker[Session], job_id: str, run: Callable[[], T]) -> T:
    """`run()` (a worker's turn at the job) as a unit of work, with a line when it takes the job and
    one when it leaves it."""
    with job_scope(sessions, job_id):
        started = time.perf_counter()
        log.info("job taken")
        result = run()
        log.info("job left: %s", result, extra={"state": str(result), "duration_ms": _ms(started)})
        return result


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
