"""After a crash: the reaper, the reconciler and the sweep. They run in every worker and in the
embedded API (`RecoveryLoop`), and any number of them may run at once: each acts on a job only
through a conditional write, so two of them never recover one job twice.

The reaper: a runnable job whose worker stopped renewing its lease (jobs.leases) is recovered by
the state machine's rules (half a lease of slack; so within two lease periods of the death):
- `queued` (the worker died before the sandbox started) and `gating` (the outcome is recorded; the
  gate decides from it) go back to a worker, with the lease cleared: the state machine resumes them.
- `running`: the partner's code may have run, and the sidecar that counted its model rows is gone
  with its worker's watch, so running it again would give it a second query budget for one charge.
  The job ends `failed` / `internal_error`, everything it reserved stays spent, and its sandbox is
  removed.

The reconciler: the database, not the broker, says what must run. A `queued` or `gating` job that no
worker holds, that has waited `reconcile_after_s`, and that is not waiting in the broker's queue
(the message was lost: Redis restarted without persistence, or was flushed) is handed to a worker
again. A duplicate message is harmless: its worker finds the job held, or ended, and steps aside.

The sweep: sandbox leftovers of jobs that ended or do not exist are removed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import session_scope, utcnow
from service.jobs import service as jobs_service
from service.jobs.context import WorkerContext
from service.jobs.dispatch import Dispatcher
from service.jobs.models import Job
from service.jobs.states import RUNNABLE, TERMINAL, JobState, JobTarget
from service.ledger import service as ledger
from service.quotas.service import Budgets
from service.release.outcomes import ErrorClass

log = logging.getLogger(__name__)
ACTOR = "reaper"


@dataclass
class Recovery:
    settings: Settings
    sessions: sessionmaker[Session]
    budgets: Budgets
    dispatcher: Dispatcher
    # Removes a job's sandbox, and sweeps leftovers; None where no Docker engine answers (yet).
    remove: Callable[[str], None] | None = None
    sweep: Callable[[Callable[[str], bool]], list[str]] | None = None
    log_: list[str] = field(default_factory=list)  # what it did, for tests and the operator's log

    def reap(self) -> dict[str, JobState]:
        """Recover every runnable job whose lease ran out. Returns {job id: the state it was left in}."""
        cutoff = utcnow() - timedelta(seconds=self.settings.lease_s / 2)
        with session_scope(self.sessions) as s:
            ids = list(s.execute(select(Job.id).where(Job.state.in_(RUNNABLE), _expired(cutoff))).scalars())
        done: dict[str, JobState] = {}
        for job_id in ids:
            try:
                state = self._reap_one(job_id, cutoff)
            except Exception:  # one job's trouble must not stop the others'
                log.exception("job %s: recovering it failed; the next round tries again", job_id)
                continue
            if state is not None:
                done[job_id] = state
        return done

    def _reap_one(self, job_id: str, cutoff: datetime) -> JobState | None:
        enqueue, twin = False, False
        with session_scope(self.sessions) as s:
            job = s.execute(
                select(Job).where(Job.id == job_id, Job.state.in_(RUNNABLE), _expired(cutoff)).with_for_update(of=Job)
            ).scalar_one_or_none()
            if job is None:  # renewed, ended or recovered meanwhile
                return None
            owner, expired_at = job.lease_owner, job.lease_expires_at
            facts = {"owner": owner, "expired_at": expired_at.isoformat() if expired_at else None, "state": job.state}
            ledger.append(s, actor=ACTOR, action="job.lease_expired", subject=f"job:{job.id}", data=facts)
            if job.state == JobState.RUNNING:
                note = f"its worker ({owner or 'unknown'}) stopped renewing its lease while the sandbox ran"
                jobs_service.end(s, self.budgets, job, ErrorClass.INTERNAL_ERROR, actor=ACTOR, note=note, ran=True)
            else:
                # Conditional on the claim it read, so a second reaper finds nothing to do.
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.lease_owner == owner)
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False)
                )
                enqueue, twin = True, job.target == JobTarget.TWIN
            state = job.state
        if state in TERMINAL and self.remove is not None:
            self._remove(job_id)
        if enqueue:
            self._enqueue(job_id, twin)
        log.warning("job %s: its worker's lease ran out; now %s", job_id, state)
        self.log_.append(f"reaped {job_id} -> {state}")
        return state

    def reconcile(self, older_than_s: float | None = None) -> list[str]:
        """Hand to a worker every runnable job no worker holds or waits for, unchanged for
        `older_than_s` (default: reconcile_after_s, so a job just committed is left to the API that
        is about to hand it over). Returns their ids."""
        age = self.settings.reconcile_after_s if older_than_s is None else older_than_s
        cutoff = utcnow() - timedelta(seconds=age)
        with session_scope(self.sessions) as s:
            rows = s.execute(
                select(Job.id, Job.target)
                .where(
                    Job.state.in_((JobState.QUEUED, JobState.GATING)),
                    Job.lease_owner.is_(None),
                    Job.updated_at < cutoff,
                )
                .order_by(Job.created_at)
            ).tuples()
            found = {job_id: target for job_id, target in rows}
        if not found:
            return []
        waiting = self.dispatcher.waiting()
        lost = [job_id for job_id in found if job_id not in waiting]
        for job_id in lost:
            log.warning("job %s: runnable, held by no worker and not in the queue; handing it over again", job_id)
            self._enqueue(job_id, found[job_id] == JobTarget.TWIN)
        self.log_.extend(f"reconciled {job_id}" for job_id in lost)
        return lost

    def sweep_leftovers(self) -> list[str]:
        """Remove sandbox leftovers of jobs that have ended or do not exist. A runnable job keeps its
        own: its worker, or the reaper, removes them."""
        if self.sweep is None:
            return []

        def keep(job_id: str) -> bool:
            with session_scope(self.sessions) as s:
                job = s.get(Job, job_id)
                return job is not None and job.state not in TERMINAL

        removed = self.sweep(keep)
        if removed:
            log.info("swept sandbox leftovers of %d jobs", len(removed))
        return removed

    def round(self) -> None:
        """One pass of all three, as the loop runs them."""
        self.reap()
        self.reconcile()
        self.sweep_leftovers()

    def _remove(self, job_id: str) -> None:
        assert self.remove is not None
        try:
            self.remove(job_id)
        except Exception:  # the sweep tries again
            log.exception("job %s: removing its sandbox failed", job_id)

    def _enqueue(self, job_id: str, twin: bool) -> None:
        try:
            self.dispatcher.enqueue(job_id, twin)
        except Exception:  # the broker is away: the next round of the reconciler tries again
            log.warning("job %s: could not hand it to a worker now", job_id, exc_info=True)


def for_worker(ctx: WorkerContext, dispatcher: Dispatcher) -> Recovery:
    """The recovery of a process that runs jobs: it removes sandboxes with the worker's own engine."""
    return Recovery(
        ctx.settings, ctx.sessions, ctx.budgets, dispatcher, remove=ctx.sandbox.remove, sweep=ctx.sandbox.sweep
    )


def _expired(cutoff: datetime) -> ColumnElement[bool]:
    """A claim that ran out before `cutoff`; or a job `running` that no worker claims at all (left by
    a version before leases)."""
    return or_(
        and_(Job.lease_owner.is_not(None), Job.lease_expires_at < cutoff),
        and_(Job.lease_owner.is_(None), Job.state == JobState.RUNNING),
    )


class RecoveryLoop:
    """Runs `recovery.round()` every half lease, on a daemon thread, until stopped."""

    def __init__(self, recovery: Callable[[], Recovery | None], every_s: float):
        self._recovery = recovery
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="evalgate-recovery", daemon=True)

    def start(self) -> RecoveryLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                recovery = self._recovery()
                if recovery is not None:
                    recovery.round()
            except Exception:  # the database or the engine is away: the next round tries again
                log.warning("a recovery round failed; retrying", exc_info=True)
