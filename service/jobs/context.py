"""What a worker needs to run jobs: settings, sessions, the sandbox, the signing key, budgets, and
the leases it holds on the jobs it runs.

Built lazily, once, by whoever runs jobs in this process: the Celery worker (jobs.tasks) or the
API's embedded dispatcher (main.py). Lazily, because building it needs a Docker engine, and a
process that never runs a job (or whose engine is down for now) must still start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import session_scope
from service.jobs.leases import Leases
from service.quotas.service import Budgets
from service.release.signing import Signer
from service.sandbox.runtimes import Runtime
from service.sandbox.spec import JobSandbox, Outcome

T = TypeVar("T")


class SandboxPort(Protocol):
    """What the runner asks of the sandbox (service.sandbox.runner.Sandbox; a stub in fast tests)."""

    def image_id(self, tag: str) -> str: ...

    def run(self, spec: JobSandbox, should_cancel: Callable[[], bool] = ...) -> Outcome: ...

    def remove(self, job_id: str) -> None: ...

    def sweep(self, keep: Callable[[str], bool]) -> list[str]: ...


@dataclass
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    sandbox: SandboxPort
    signer: Signer
    runtime: Runtime
    budgets: Budgets
    leases: Leases

    def session(self) -> AbstractContextManager[Session]:
        """One unit of work: committed at the end, rolled back on any error."""
        return session_scope(self.sessions)


def build_context(settings: Settings, sessions: sessionmaker[Session], budgets: Budgets | None = None) -> WorkerContext:
    """A context on the local Docker engine. Raises DockerUnavailable when no engine answers."""
    from service.sandbox.client import docker_client
    from service.sandbox.runner import Sandbox
    from service.sandbox.runtimes import resolve

    client = docker_client()
    assert settings.signing_key_path is not None
    return WorkerContext(
        settings=settings,
        sessions=sessions,
        sandbox=Sandbox(client, deployment=settings.queue, state_dir=settings.data_dir / "sandbox"),
        signer=Signer.load_or_create(settings.signing_key_path),
        runtime=resolve(client, settings.docker_runtime),
        budgets=budgets or Budgets.build(settings, sessions),
        leases=Leases(sessions, settings.lease_s),
    )


class Lazy(Generic[T]):
    """Builds a value on first use and keeps it; a failed build is tried again next time."""

    def __init__(self, build: Callable[[], T]):
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value


LazyContext = Lazy[WorkerContext]
