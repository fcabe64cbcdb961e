"""A sandbox that runs nothing (for tests of the state machine and of what partners see, without
Docker), and the outcomes it hands back."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from service.jobs.context import WorkerContext
from service.jobs.leases import Leases
from service.sandbox.runtimes import Runtime
from service.sandbox.spec import JobSandbox, Outcome
from tests.harness import Harness


class StubSandbox:
    def __init__(self, *outcomes: Outcome | BaseException):
        self.outcomes = list(outcomes)
        self.runs: list[JobSandbox] = []
        self.removed: list[str] = []

    def image_id(self, tag: str) -> str:
        return f"sha256:{tag}"

    def run(self, spec: JobSandbox, should_cancel: Callable[[], bool] = lambda: False) -> Outcome:
        self.runs.append(spec)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def remove(self, job_id: str) -> None:
        self.removed.append(job_id)

    def sweep(self, keep: Callable[[str], bool]) -> list[str]:
        return []


def context(h: Harness, sandbox: StubSandbox) -> WorkerContext:
    """A worker context on the harness's own database, budgets and key, with the stub sandbox."""
    state = h.client.app.state
    return WorkerContext(
        settings=h.settings,
        sessions=state.sessionmaker,
        sandbox=sandbox,
        signer=state.signer,
        runtime=Runtime("runc", "runc", "runc", "{}"),
        budgets=state.budgets,
        leases=Leases(state.sessionmaker, h.settings.lease_s),
    )


def rows_file(labels: np.ndarray, wrong: int, classes: int = 3) -> bytes:
    """A rows file of one-hot probabilities: right for all rows but the last `wrong`."""
    predicted = labels.copy()
    predicted[len(labels) - wrong :] = (predicted[len(labels) - wrong :] + 1) % classes
    buf = io.BytesIO()
    np.savez(buf, probabilities=np.eye(classes, dtype=np.float32)[predicted])
    return buf.getvalue()


def released_outcome(dataset: Path) -> Outcome:
    """What a built-in job on the demo dataset leaves when it ran well: accuracy 500 / 600."""
    with np.load(dataset) as npz:
        labels = npz["y"]
    return Outcome(
        exit_code=0,
        result=rows_file(labels, wrong=100),
        usage={"rows": 600, "requests": 3, "budget_exceeded": False},
        images={"job": "sha256:job", "sidecar": "sha256:sidecar"},
    )


def crashed_outcome(job_log: str) -> Outcome:
    """What a job whose code crashed leaves: exit code 1 and its output (for operators only)."""
    return Outcome(
        exit_code=1, job_log=job_log, usage={"rows": 10}, images={"job": "sha256:job", "sidecar": "sha256:sidecar"}
    )


class HeldSandbox(StubSandbox):
    """A sandbox that runs until the test lets it end, so the job stays `running` under its lease."""

    def __init__(self, started: threading.Event, release: threading.Event, outcome: Outcome):
        super().__init__(outcome)
        self.started, self.release = started, release

    def run(self, spec: JobSandbox, should_cancel: Callable[[], bool] = lambda: False) -> Outcome:
        self.started.set()
        assert self.release.wait(30)
        return super().run(spec, should_cancel)


@contextmanager
def held_running(h: Harness, job_id: str, outcome: Outcome) -> Iterator[WorkerContext]:
    """The job running on a worker thread, held in its sandbox until the block ends; then it ends
    with `outcome`. Yields the worker's context (its lease owner is `.leases.owner`)."""
    from service.jobs import runner

    started, release = threading.Event(), threading.Event()
    ctx = context(h, HeldSandbox(started, release, outcome))
    worker = threading.Thread(target=runner.run_job, args=(ctx, job_id))
    worker.start()
    try:
        assert started.wait(30), "the job never reached its sandbox"
        yield ctx
    finally:
        release.set()
        worker.join(30)


def past_its_padding(api: Any, job_id: str, seconds: float = 700) -> None:
    """Move a real job's times, and when its budgets come back, `seconds` into the past: as if its
    padded completion time had come."""
    from service.jobs.models import Job
    from service.quotas.models import BudgetReservation

    shift = timedelta(seconds=seconds)
    with api.db() as s:
        job = s.get(Job, job_id)
        job.created_at, job.started_at, job.finished_at = (
            t - shift if t is not None else None for t in (job.created_at, job.started_at, job.finished_at)
        )
        held = s.get(BudgetReservation, job_id)
        if held is not None and held.settle_at is not None:
            held.settle_at -= shift
