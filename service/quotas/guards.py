"""Admission guards shared by every API process: releases per partner per window, and one admission
at a time per partner (which makes "jobs in progress" an exact count).

With Redis the window lives in Redis (the `limits` library's moving window, atomic in Lua) and the
per-partner lock is a Redis lock, so several API processes agree. Embedded mode (one process) keeps
both in memory.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from service.quotas.errors import AdmissionBusy

LOCK_TIMEOUT_S = 30  # an admission holding the lock longer than this has died; the lock frees itself
LOCK_WAIT_S = 15


@dataclass(frozen=True)
class Window:
    limit: int
    remaining: int
    reset_in_s: int


class AdmissionGuards:
    def __init__(self, *, redis_url: str | None, namespace: str, window_s: int):
        self.namespace, self.window_s = namespace, window_s
        self._limiter = MovingWindowRateLimiter(storage_from_string(redis_url or "memory://"))
        if redis_url:
            import redis

            self._redis: redis.Redis | None = redis.Redis.from_url(
                redis_url, socket_timeout=10, socket_connect_timeout=3
            )
        else:
            self._redis = None
            self._locks: dict[int, threading.Lock] = defaultdict(threading.Lock)

    def _item(self, limit: int) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(limit, self.window_s)

    @contextmanager
    def partner_lock(self, principal_id: int) -> Iterator[None]:
        """Serialises one partner's admissions across API processes."""
        if self._redis is None:
            lock = self._locks[principal_id]
            acquired = lock.acquire(timeout=LOCK_WAIT_S)
        else:
            lock = self._redis.lock(
                f"{self.namespace}:admission:{principal_id}", timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_WAIT_S
            )
            acquired = lock.acquire()
        if not acquired:
            raise AdmissionBusy(
                "another submission of yours is being admitted", alternatives=["retry in a moment"], retry_after_s=1
            )
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def rebuild_lock(self) -> Iterator[None]:
        """One process at a time puts lost counters back (Budgets.ensure_counters)."""
        if self._redis is None:
            yield
            return
        lock = self._redis.lock(f"{self.namespace}:rebuild", timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_WAIT_S)
        if not lock.acquire():
            raise AdmissionBusy(
                "the service is restoring its counters", alternatives=["retry in a moment"], retry_after_s=1
            )
        try:
            yield
        finally:
            lock.release()

    def restore_releases(self, principal_id: int, admitted: int, limit: int) -> None:
        """After Redis lost the window: count the partner's admissions of the last window again, as
        taken now (so the window closes later than it would have: the safe direction)."""
        if limit > 0 and admitted > 0:
            self._limiter.hit(
                self._item(limit), self.namespace, "releases", str(principal_id), cost=min(admitted, limit)
            )

    def take_release(self, principal_id: int, limit: int) -> bool:
        """Count one release against the partner's window; False (and nothing counted) when it is full.
        The moving window cannot take one hit back, so an admission that then fails to commit costs the
        partner one slot for one window: the safe direction."""
        return limit > 0 and self._limiter.hit(self._item(limit), self.namespace, "releases", str(principal_id))

    def release_window(self, principal_id: int, limit: int) -> Window:
        if limit <= 0:
            return Window(limit=0, remaining=0, reset_in_s=0)
        stats = self._limiter.get_window_stats(self._item(limit), self.namespace, "releases", str(principal_id))
        return Window(
            limit=limit, remaining=stats.remaining, reset_in_s=max(0, int(stats.reset_time - time.time()) + 1)
        )
