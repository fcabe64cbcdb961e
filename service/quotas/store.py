"""Per-partner model rows per UTC day, counted across jobs.

A job reserves its rows before it runs (at most what is left today) and settles after: the rows it
did not use go back. Both steps are idempotent by job id. Redis holds the counters when the service
has one (API and workers share it); embedded mode keeps them in the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.quotas.models import RowGrant, RowUsage

GRANT_TTL_S = 3 * 86400


def today(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%d")


def seconds_to_reset(now: datetime | None = None) -> int:
    now = now or datetime.now(timezone.utc)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((tomorrow - now).total_seconds()) + 1


class RowQuota(Protocol):
    def used(self, principal_id: int) -> int: ...
    def reserve(self, principal_id: int, job_id: str, want: int, cap: int) -> int: ...
    def settle(self, job_id: str, used: int) -> int | None: ...


# KEYS[1] usage counter, KEYS[2] grants hash. ARGV: job id, want, cap, ttl, day.
_RESERVE = """
local prior = redis.call('HGET', KEYS[2], ARGV[1])
if prior then return tonumber(cjson.decode(prior)['granted']) end
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - used)
if grant < 0 then grant = 0 end
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


class RedisRowQuota:
    def __init__(self, url: str, prefix: str = "evalgate"):
        import redis

        self.r = redis.Redis.from_url(url, socket_timeout=10)
        self.prefix = prefix
        self._reserve = self.r.register_script(_RESERVE)
        self._settle = self.r.register_script(_SETTLE)

    def _key(self, principal_id: int, day: str | None = None) -> str:
        return f"{self.prefix}:rows:{principal_id}:{day or today()}"

    @property
    def _grants(self) -> str:
        return f"{self.prefix}:row-grants"

    def used(self, principal_id: int) -> int:
        return int(self.r.get(self._key(principal_id)) or 0)

    def reserve(self, principal_id: int, job_id: str, want: int, cap: int) -> int:
        return int(self._reserve(keys=[self._key(principal_id), self._grants], args=[job_id, want, cap, GRANT_TTL_S]))

    def settle(self, job_id: str, used: int) -> int | None:
        refund = int(self._settle(keys=[self._grants], args=[job_id, used]))
        return None if refund < 0 else refund


class SqlRowQuota:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def used(self, principal_id: int) -> int:
        with session_scope(self.sessions) as s:
            row = s.get(RowUsage, (principal_id, today()))
            return row.rows if row else 0

    def reserve(self, principal_id: int, job_id: str, want: int, cap: int) -> int:
        day = today()
        with session_scope(self.sessions) as s:
            prior = s.get(RowGrant, job_id)
            if prior is not None:
                return prior.granted
            # Concurrent first reservations of the day must not collide on creating the row.
            insert = {"postgresql": pg_insert, "sqlite": sqlite_insert}[s.get_bind().dialect.name]
            s.execute(insert(RowUsage).values(principal_id=principal_id, day=day, rows=0).on_conflict_do_nothing())
            # The UPDATE takes the row lock (the write lock on SQLite) before the read below.
            s.execute(update(RowUsage).where(RowUsage.principal_id == principal_id, RowUsage.day == day)
                      .values(rows=RowUsage.rows))
            usage = s.execute(select(RowUsage).where(RowUsage.principal_id == principal_id, RowUsage.day == day)
                              .execution_options(populate_existing=True)).scalar_one()
            grant = max(0, min(want, cap - usage.rows))
            usage.rows += grant
            s.add(RowGrant(job_id=job_id, principal_id=principal_id, day=day, granted=grant))
            return grant

    def settle(self, job_id: str, used: int) -> int | None:
        with session_scope(self.sessions) as s:
            grant = s.get(RowGrant, job_id)
            if grant is None or grant.settled:
                return None
            refund = max(0, grant.granted - used)
            s.execute(update(RowUsage).where(RowUsage.principal_id == grant.principal_id, RowUsage.day == grant.day)
                      .values(rows=RowUsage.rows - refund))
            grant.settled = True
            return refund


def make_quota(settings, sessions: sessionmaker[Session]) -> RowQuota:
    url = settings.redis_url
    return RedisRowQuota(url, prefix=settings.queue) if url else SqlRowQuota(sessions)
