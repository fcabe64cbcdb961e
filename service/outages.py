"""What a request gets when something the service depends on is away: the database, the store of
budgets and rates (Redis), or disk space. One place turns those failures into the API's error shape,
with `Retry-After`, instead of a 500: `as_error(exc)`. The request's transaction has rolled back by
then, so nothing is half-written; uploads remove their partial files themselves (registry.storage).
"""

from __future__ import annotations

import errno

from service.errors import DatabaseUnavailable, EvalgateError, StorageFull
from service.quotas.errors import RateLimiterUnavailable

RETRY_AFTER_S = 5


def as_error(exc: BaseException) -> EvalgateError | None:
    """The API error for an outage, or None when `exc` is not one."""
    import redis
    from sqlalchemy import exc as sa

    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return StorageFull("the server's disk is full; nothing was stored", retry_after_s=60)
        if isinstance(e, sa.OperationalError | sa.InterfaceError) or (
            isinstance(e, sa.DBAPIError) and e.connection_invalidated
        ):
            if "disk is full" in str(e.orig):  # SQLite: SQLITE_FULL
                return StorageFull("the server's disk is full; nothing was stored", retry_after_s=60)
            return DatabaseUnavailable("the service's database does not answer", retry_after_s=RETRY_AFTER_S)
        if isinstance(e, sa.TimeoutError):  # no connection free in the pool in time
            return DatabaseUnavailable("the service's database is overloaded", retry_after_s=RETRY_AFTER_S)
        if isinstance(e, redis.ConnectionError | redis.TimeoutError):
            return RateLimiterUnavailable(
                "the service cannot check budgets and rates now; nothing was admitted", retry_after_s=RETRY_AFTER_S
            )
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during (at most 8 deep)."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(seen) < 8 and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen
