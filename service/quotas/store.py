"""Per-partner daily resources, counted across jobs: model rows, and leakage in millibits.

A job reserves before it runs and settles after: what it did not use goes back. Model rows are
granted in part when less is left (the job then gets fewer rows); leakage is all or nothing (the job
is refused at admission). Both steps are idempotent by job id. Redis holds the counters when the
service has one (API and workers share it); embedded mode keeps them in the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import insert_if_missing, session_scope
from service.quotas.models import DailyGrant, DailyUsage

if TYPE_CHECKING:
    from service.config import Settings

GRANT_TTL_S = 30 * 86400  # a job may wait for approval for days before it settles


def today(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%d")


def seconds_to_reset(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((tomorrow - now).total_seconds()) + 1


class DailyQuota(Protocol):
    resource: str

    # `session`: the caller's open transaction. The database store then writes in it (SQLite has one
    # writer, so a second transaction would wait on the caller's), and a rollback undoes it too.
    # Redis ignores it.
    def used(self, principal_id: int, session: Session | None = None) -> int: ...
    def reserve(
        self, principal_id: int, job_id: str, want: int, cap: int, partial: bool = True, session: Session | None = None
    ) -> int: ...
    def settle(self, job_id: str, used: int, session: Session | None = None) -> int | None: ...

    # Whether the counters are all there (False after Redis lost its data), and putting them back
    # from the database's reservations: {(principal, day): charged}, and the grants still open.
    def intact(self) -> bool: ...
    def restore(self, counts: dict[tuple[int, str], int], open_grants: list[tuple[str, int, str, int]]) -> None: ...


# KEYS[1] usage counter, KEYS[2] grants hash. ARGV: job id, want, cap, ttl, partial (1/0).
# A refused all-or-nothing reservation leaves no record: the job it was for is never created.
_RESERVE = """
local prior = redis.call('HGET', KEYS[2], ARGV[1])
if prior then return tonumber(cjson.decode(prior)['granted']) end
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - used)
if grant < 0 then grant = 0 end
if ARGV[5] == '0' and grant < tonumber(ARGV[2]) then return 0 end
if grant > 0 then
  redis.call('INCRBY', KEYS[1], grant)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({granted=grant, key=KEYS[1]}))
redis.call('EXPIRE', KEYS[2], ARGV[4])
return grant
"""

# KEYS[1] grants hash. ARGV: job id, rows used. Returns the refund, or -1 if already settled/unknown.
_SETTLE = """
local prior = redis.call('HGET', KEYS[1], ARGV[1])
if not prior then return -1 end
local g = cjson.decode(prior)
if g['settled'] then return -1 end
local refund = tonumber(g['granted']) - tonumber(ARGV[2])
if refund > 0 then redis.call('DECRBY', g['key'], refund) else refund = 0 end
g['settled'] = true
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(g))
return refund
"""


class RedisDailyQuota:
    def __init__(self, url: str, prefix: str = "evalgate", resource: str = "rows"):
        import redis

        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=3)
        self.prefix, self.resource = prefix, resource
        self._reserve = self.r.register_script(_RESERVE)
        self._settle = self.r.register_script(_SETTLE)

    def _key(self, principal_id: int, day: str | None = None) -> str:
        return f"{self.prefix}:{self.resource}:{principal_id}:{day or today()}"

    @property
    def _grants(self) -> str:
        return f"{self.prefix}:{self.resource}-grants"

    def used(self, principal_id: int, session: Session | None = None) -> int:
        # redis-py annotates even the synchronous client's replies as "Awaitable | Any".
        return int(self.r.get(self._key(principal_id)) or 0)  # type: ignore[arg-type]

    def reserve(
        self, principal_id: int, job_id: str, want: int, cap: int, partial: bool = True, session: Session | None = None
    ) -> int:
        return int(
            self._reserve(
                keys=[self._key(principal_id), self._grants], args=[job_id, want, cap, GRANT_TTL_S, int(partial)]
            )
        )

    def settle(self, job_id: str, used: int, session: Session | None = None) -> int | None:
        refund = int(self._settle(keys=[self._grants], args=[job_id, used]))
        return None if refund < 0 else refund

    @property
    def _mark(self) -> str:
        return f"{self.prefix}:{self.resource}-intact"

    def intact(self) -> bool:
        """The mark is written with the counters: a Redis that restarted empty, or was flushed, has
        lost it with them."""
        return bool(self.r.exists(self._mark))

    def restore(self, counts: dict[tuple[int, str], int], open_grants: list[tuple[str, int, str, int]]) -> None:
        pipe = self.r.pipeline(transaction=True)
        for (principal_id, day), n in counts.items():
            pipe.set(self._key(principal_id, day), n, ex=GRANT_TTL_S)
        for job_id, principal_id, day, granted in open_grants:
            pipe.hset(self._grants, job_id, json.dumps({"granted": granted, "key": self._key(principal_id, day)}))
        if open_grants:
            pipe.expire(self._grants, GRANT_TTL_S)
        pipe.set(self._mark, 1)
        pipe.execute()


class SqlDailyQuota:
    def __init__(self, sessions: sessionmaker[Session], resource: str = "rows"):
        self.sessions, self.resource = sessions, resource

    def _usage(
        self, principal_id: int, day: str
    ) -> tuple[ColumnElement[bool], ColumnElement[bool], ColumnElement[bool]]:
        return (DailyUsage.principal_id == principal_id, DailyUsage.resource == self.resource, DailyUsage.day == day)

    def used(self, principal_id: int, session: Session | None = None) -> int:
        with self._scope(session) as s:
            row = s.execute(
                select(DailyUsage).where(*self._usage(principal_id, today())).execution_options(populate_existing=True)
            ).scalar_one_or_none()
            return row.amount if row else 0

    @contextmanager
    def _scope(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
            session.flush()
        else:
            with session_scope(self.sessions) as s:
                yield s

    def reserve(
        self, principal_id: int, job_id: str, want: int, cap: int, partial: bool = True, session: Session | None = None
    ) -> int:
        day = today()
        with self._scope(session) as s:
            prior = s.get(DailyGrant, (job_id, self.resource))
            if prior is not None:
                return prior.granted
            insert_if_missing(s, DailyUsage, principal_id=principal_id, resource=self.resource, day=day, amount=0)
            # The UPDATE takes the row lock (the write lock on SQLite) before the read below.
            s.execute(update(DailyUsage).where(*self._usage(principal_id, day)).values(amount=DailyUsage.amount))
            usage = s.execute(
                select(DailyUsage).where(*self._usage(principal_id, day)).execution_options(populate_existing=True)
            ).scalar_one()
            grant = max(0, min(want, cap - usage.amount))
            if not partial and grant < want:
                return 0
            usage.amount += grant
            s.add(DailyGrant(job_id=job_id, resource=self.resource, principal_id=principal_id, day=day, granted=grant))
            return grant

    def intact(self) -> bool:
        return True  # the database's counters are in the database's transactions

    def restore(self, counts: dict[tuple[int, str], int], open_grants: list[tuple[str, int, str, int]]) -> None:
        pass

    def settle(self, job_id: str, used: int, session: Session | None = None) -> int | None:
        with self._scope(session) as s:
            grant = s.get(DailyGrant, (job_id, self.resource))
            if grant is None or grant.settled:
                return None
            refund = max(0, grant.granted - used)
            s.execute(
                update(DailyUsage)
                .where(*self._usage(grant.principal_id, grant.day))
                .values(amount=DailyUsage.amount - refund)
            )
            grant.settled = True
            return refund


def make_quota(settings: Settings, sessions: sessionmaker[Session], resource: str = "rows") -> DailyQuota:
    url = settings.redis_url
    return RedisDailyQuota(url, prefix=settings.queue, resource=resource) if url else SqlDailyQuota(sessions, resource)
