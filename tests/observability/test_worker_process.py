"""`evalgate worker` as deployed: its lines are JSON from its first (Celery's own included), and its
metrics port answers Prometheus with the job counters and nothing about any partner."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.harness import REDIS_URL, WorkerProcess, require_redis

pytestmark = pytest.mark.redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_worker_logs_json_and_serves_its_metrics(tmp_path: Path):
    require_redis()
    port = free_port()
    settings = factories.settings(tmp_path / "data", broker_url=REDIS_URL, metrics_port=port)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        worker.stop()
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {"evalgate_jobs_submitted", "evalgate_jobs_ended", "evalgate_job_phase_seconds"} <= set(families)
    assert not any("partner" in s.labels for f in families.values() for s in f.samples)
    lines = [line for line in (tmp_path / "worker.log").read_text().splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in lines]
    (ready,) = [x for x in parsed if x["msg"].endswith(" ready.")]
    assert ready["service"] == "worker" and ready["level"] == "info"
