"""Two lanes: twin jobs have their own queue and their own workers, so a twin job (whose partner sees
when it starts) never waits behind a real job (service.jobs.dispatch)."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from service.jobs.dispatch import CeleryDispatcher, EmbeddedDispatcher
from tests import factories
from tests.harness import REDIS_URL, require_redis


@pytest.mark.redis
def test_celery_hands_each_job_to_its_lanes_queue_and_finds_both(tmp_path):
    require_redis()
    settings = factories.settings(tmp_path / "d", broker_url=REDIS_URL, queue=f"lanes-{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        dispatcher = CeleryDispatcher(settings)
        dispatcher.enqueue("real-job")
        dispatcher.enqueue("twin-job", twin=True)
        assert settings.twin_queue == f"{settings.queue}.twins"
        assert (client.llen(settings.queue), client.llen(settings.twin_queue)) == (1, 1)
        assert b"twin-job" in client.lindex(settings.twin_queue, 0)  # type: ignore[operator]
        assert b"real-job" in client.lindex(settings.queue, 0)  # type: ignore[operator]
        # The reconciler sees what waits in either lane.
        assert dispatcher.waiting() == {"real-job", "twin-job"}
    finally:
        client.delete(settings.queue, settings.twin_queue)
        client.close()


def test_embedded_a_twin_job_runs_while_a_real_job_holds_the_real_lane():
    """One worker thread per lane: a twin job starts while a real job is still running."""
    release, ran = threading.Event(), []
    twin_started = threading.Event()

    def run(job_id: str) -> None:
        ran.append(job_id)
        if job_id == "real":
            release.wait(10)
        else:
            twin_started.set()

    dispatcher = EmbeddedDispatcher(run)
    try:
        dispatcher.enqueue("real")
        dispatcher.enqueue("twin", twin=True)
        assert twin_started.wait(5), "the twin job waited behind the real one"
        assert "real" in ran
    finally:
        release.set()
        dispatcher.close()
