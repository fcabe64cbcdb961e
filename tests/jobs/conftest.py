"""Fixtures of the jobs domain's tests."""

from __future__ import annotations

import pytest

from tests import factories
from tests.harness import REDIS_URL, harness, require_redis

# The release gate's budgets as these tests set them: noise on, small enough to reach.
GATE = dict(
    dp_mechanism="laplace",
    dp_epsilon_per_metric=0.1,
    dp_max_epsilon_per_metric=0.5,
    dp_epsilon_budget=1.0,
    leakage_bits_per_day=4096,
    releases_per_window=1000,
    max_concurrent_jobs=1000,
)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def gate_api(request, tmp_path, demo_files):
    def start(**overrides):
        extra = {}
        if request.param == "postgres":
            extra["database_url"] = request.getfixturevalue("postgres_url")
        if request.param == "redis":
            require_redis()
            extra["redis_url"] = REDIS_URL
        settings = factories.settings(tmp_path / f"data{len(started)}", **{**GATE, **extra, **overrides})
        gen = harness(settings, demo_files)
        started.append(gen)
        return next(gen)

    started = []
    yield start
    for gen in started:
        gen.close()
