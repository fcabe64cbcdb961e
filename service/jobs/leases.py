"""A worker's claim on the jobs it runs: one lease per job, in the job's row.

A worker claims a runnable job before it acts on it (an atomic UPDATE: unheld, or already its own),
renews every claim it holds every `period / 3` from one background thread, and lets go when the job
leaves its hands. A second worker handed the same job (a redelivery while the first still runs)
finds it claimed and steps aside. A worker that dies stops renewing: the reaper (jobs.recovery)
then recovers the job. A worker that finds its claim taken (it was cut off from the database for
longer than a lease) stops the job's sandbox and records nothing more for it.

Times are the workers' own clocks (UTC); the workers of one deployment share a host or keep their
clocks in step (NTP), and the reaper allows half a period of slack.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.jobs.models import Job
from service.jobs.states import RUNNABLE

log = logging.getLogger(__name__)


def worker_name() -> str:
    """Unique per process, and readable by an operator: host, pid, and a random tail (pids repeat)."""
    return f"{socket.gethostname()[:48]}:{os.getpid()}:{secrets.token_hex(4)}"


class LeaseLost(Exception):
    """Another worker (or the reaper) holds the job now: this worker must stop acting on it."""


class Leases:
    """The leases one worker process holds."""

    def __init__(self, sessions: sessionmaker[Session], period_s: float, owner: str | None = None):
        self.sessions = sessions
        self.period_s = period_s
        self.owner = owner or worker_name()
        self._held: set[str] = set()
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self, job_id: str) -> bool:
        """Take the job if it is runnable and no other worker holds it. False: step aside."""
        with self._lock:
            if job_id in self._held:  # this process runs it already (a duplicate delivery)
                return False
            self._held.add(job_id)
            self._lost.discard(job_id)
        try:
            with session_scope(self.sessions) as s:
                taken = s.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.state.in_(RUNNABLE),
                        or_(Job.lease_owner.is_(None), Job.lease_owner == self.owner),
                    )
                    .values(lease_owner=self.owner, lease_expires_at=utcnow() + timedelta(seconds=self.period_s))
                    .execution_options(synchronize_session=False)
                )
                ok = bool(taken.rowcount == 1)  # type: ignore[attr-defined]  # a CursorResult
        except BaseException:
            self._forget(job_id)
            raise
        if not ok:
            self._forget(job_id)
            return False
        self._ensure_renewing()
        return True

    def holds(self, job_id: str) -> bool:
        """Whether this worker still holds the job, as far as it knows (its last renewal)."""
        with self._lock:
            return job_id in self._held and job_id not in self._lost

    def check(self, session: Session, job: Job) -> None:
        """Inside a step's transaction: raise LeaseLost unless the row still names this worker."""
        if job.lease_owner != self.owner or not self.holds(job.id):
            raise LeaseLost(f"job {job.id} is held by {job.lease_owner or 'no worker'} now, not {self.owner}")

    def let_go(self, job_id: str) -> None:
        """Stop renewing; clear the claim in the row if it is still this worker's (an ended job's
        claim was cleared when it ended)."""
        self._forget(job_id)
        try:
            with session_scope(self.sessions) as s:
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.lease_owner == self.owner)
                    .values(lease_owner=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False)
                )
        except Exception:  # the claim then simply runs out, and the reaper looks at the job
            log.warning("job %s: could not clear this worker's lease", job_id, exc_info=True)

    def close(self) -> None:
        """Stop renewing anything (the claims in the rows run out)."""
        with self._lock:
            self._held.clear()
            self._lost.clear()
        self._wake.set()

    def forget(self, job_id: str) -> None:
        """Stop renewing, and leave the row as it is: the claim runs out (after a crash)."""
        self._forget(job_id)

    def renew(self) -> None:
        """Extend every claim this worker holds; note the ones another worker or the reaper took."""
        with self._lock:
            held = set(self._held)
        if not held:
            return
        with session_scope(self.sessions) as s:
            s.execute(
                update(Job)
                .where(Job.id.in_(held), Job.lease_owner == self.owner)
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.period_s))
                .execution_options(synchronize_session=False)
            )
            still = set(s.execute(select(Job.id).where(Job.id.in_(held), Job.lease_owner == self.owner)).scalars())
        with self._lock:
            for job_id in held - still:
                if job_id in self._held and job_id not in self._lost:
                    log.error("job %s: this worker's lease was taken; stopping its sandbox", job_id)
                    self._lost.add(job_id)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._held.discard(job_id)
            self._lost.discard(job_id)

    def _ensure_renewing(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._renew_loop, name="evalgate-leases", daemon=True)
                self._thread.start()

    def _renew_loop(self) -> None:
        while True:
            self._wake.wait(self.period_s / 3)
            self._wake.clear()
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
            try:
                self.renew()
            except Exception:  # the database is away: keep trying; the claim holds until it runs out
                log.warning("renewing job leases failed; retrying", exc_info=True)
