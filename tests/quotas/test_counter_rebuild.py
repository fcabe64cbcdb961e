"""Redis keeps the daily counters and the release window, and may lose them (a restart without
persistence, a flush). The database keeps every reservation: the counters come back from it, exactly,
before anything reads or spends them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.jobs import runner
from tests import factories
from tests.harness import REDIS_URL, Harness, harness, require_redis
from tests.stubs import StubSandbox, context, released_outcome

pytestmark = pytest.mark.redis


@pytest.fixture
def counted(tmp_path: Path, demo_files) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    require_redis()
    settings = factories.settings(tmp_path / "data", redis_url=REDIS_URL, releases_per_window=5, max_query_budget=1000)
    yield from harness(settings, demo_files)


def forget_everything(h: Harness) -> None:
    """What a Redis restart does to this deployment's keys."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{h.settings.queue}*")) + list(client.scan_iter(f"LIMITS*{h.settings.queue}*"))
    assert keys
    client.delete(*keys)


def settled(h: Harness, rows_used: int, within_s: float = 10) -> dict:
    """The partner's budget once what the endings give back has moved (at their padded times)."""
    deadline = time.monotonic() + within_s
    while True:
        budget = h.budget()
        if budget["model_rows"]["used"] == rows_used or time.monotonic() > deadline:
            assert budget["model_rows"]["used"] == rows_used, budget["model_rows"]
            return budget
        time.sleep(0.1)


def test_counters_lost_with_redis_come_back_from_the_reservations(counted: Harness, demo_files) -> None:  # type: ignore[no-untyped-def]
    h = counted
    ran = h.post_job(metrics=["accuracy"], resources={"query_budget": 1000}).json()["id"]
    open_ = h.post_job(metrics=["macro_f1"], resources={"query_budget": 700}).json()["id"]
    # Awaiting an operator's approval (its partner sees it wait), so a cancel gives all it reserved back.
    cancelled = h.post_job(metrics=["log_loss"], resources={"query_budget": 1200}, request_approval=True).json()
    assert cancelled["state"] == "awaiting_approval", cancelled
    assert runner.run_job(context(h, StubSandbox(released_outcome(demo_files["data"]))), ran) == "released"
    assert h.client.post(f"/v1/jobs/{cancelled['id']}/cancel", headers=h.partner).status_code in (200, 202)
    before = settled(h, 1000 + 700)  # the cancelled job's rows came back

    forget_everything(h)
    after = h.budget()

    def counts(body: dict) -> tuple[dict, dict]:  # without the clock, which ticks between the two reads
        return tuple(
            {k: v for k, v in body[part].items() if k != "resets_in_s"} for part in ("model_rows", "leakage_bits")
        )  # type: ignore[return-value]

    assert counts(after) == counts(before)
    # The open job's grant is back too: when it ends without running, its rows come back once.
    with h.db() as s:
        from service.jobs import service as jobs_service
        from service.jobs.models import Job
        from service.release.outcomes import ErrorClass

        jobs_service.end(s, h.client.app.state.budgets, s.get(Job, open_), ErrorClass.CANCELLED, actor="t", ran=False)
    assert settled(h, 1000)["model_rows"]["used"] == 1000
    # The release window: the three admissions of this window count again (5 allowed, 3 taken).
    assert h.budget()["releases"]["left"] == 2
