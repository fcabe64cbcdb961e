"""Per-partner rows per day: reserve before a job, settle after; atomic and idempotent per job, on
Redis and on the database."""

import uuid

import pytest

from service.quotas.store import RedisDailyQuota, SqlDailyQuota
from tests.harness import REDIS_URL, concurrently, require_redis


@pytest.fixture(params=["sql", pytest.param("redis", marks=pytest.mark.redis)])
def quota(request, sessions):
    if request.param == "redis":
        require_redis()
        q = RedisDailyQuota(REDIS_URL, prefix=f"evalgate-test-{uuid.uuid4().hex[:8]}")
        yield q
        for key in q.r.scan_iter(f"{q.prefix}:*"):
            q.r.delete(key)
    else:
        yield SqlDailyQuota(sessions)


def test_reserve_grants_at_most_what_is_left(quota):
    assert quota.reserve(1, "job-a", want=600, cap=1000) == 600
    assert quota.reserve(1, "job-b", want=600, cap=1000) == 400
    assert quota.reserve(1, "job-c", want=10, cap=1000) == 0
    assert quota.used(1) == 1000
    assert quota.reserve(2, "job-d", want=10, cap=1000) == 10  # another partner has its own


def test_reserve_and_settle_are_idempotent_per_job(quota):
    assert quota.reserve(1, "job-a", want=600, cap=1000) == 600
    assert quota.reserve(1, "job-a", want=600, cap=1000) == 600  # a redelivered task
    assert quota.used(1) == 600
    assert quota.settle("job-a", used=100) == 500
    assert quota.settle("job-a", used=100) is None
    assert quota.used(1) == 100
    assert quota.settle("never-reserved", used=5) is None


def test_concurrent_reservations_never_overspend(quota):
    grants = concurrently(lambda i: quota.reserve(7, f"job-{i}", want=70, cap=1000), 30)
    assert sum(grants) == 1000 and quota.used(7) == 1000


def test_all_or_nothing_leaves_no_trace_when_refused(quota):
    """Leakage bits: a job is admitted with all it may carry, or refused with nothing written."""
    assert quota.reserve(3, "job-a", want=700, cap=1000, partial=False) == 700
    assert quota.reserve(3, "job-b", want=400, cap=1000, partial=False) == 0
    assert quota.used(3) == 700
    assert quota.settle("job-b", used=0) is None  # the refused job holds no grant
    assert quota.reserve(3, "job-b", want=300, cap=1000, partial=False) == 300  # and may come back smaller
