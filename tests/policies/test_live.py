"""A policy change applies live: two API processes and a Celery worker on one Redis and one database;
an operator changes a limit through one process, and the next submission on either sees it within
a second, with no restart."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.db import make_engine, migrate, session_scope
from service.jobs.admission import ASK_OPERATOR
from service.schema import make_sessionmaker
from tests import factories
from tests.harness import settings_env
from tests.reliability.stack import Process, RedisServer, free_port

pytestmark = pytest.mark.redis


class Api(Process):
    def __init__(self, name: str, logs: Path, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)], logs, env)

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer:\n{self.tail()}")


@pytest.fixture
def processes(tmp_path: Path, demo_files: dict[str, Path]) -> Iterator[tuple[Api, Api, dict[str, dict[str, str]]]]:
    logs = tmp_path / "logs"
    logs.mkdir()
    redis = RedisServer(logs)
    redis.start()
    settings = factories.settings(tmp_path / "data", broker_url=redis.url)
    migrate(str(settings.database_url))
    with session_scope(make_sessionmaker(make_engine(str(settings.database_url)))) as s:
        keys = {
            "operator": factories.bearer(factories.key(s, "ops", "operator")),
            "partner": factories.bearer(factories.key(s, "acme", "partner")),
        }
    # No job needs to run here: the worker is there to show that nothing needs restarting, and with
    # no Docker engine to reach it fails whatever it is handed.
    env = settings_env(settings) | {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    a, b = Api("api-a", logs, env), Api("api-b", logs, env)
    worker = Process("worker", [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1"], logs, env)
    started: list[Process] = []
    try:
        for p in (a, b, worker):
            p.start()
            started.append(p)
        worker.wait_for(" ready.")
        for kind, name, path in (
            ("models", "demo-classifier", demo_files["model"]),
            ("datasets", "demo-blobs", demo_files["data"]),
        ):
            with open(path, "rb") as f:
                r = httpx.post(
                    f"{a.url}/v1/{kind}",
                    headers=keys["operator"],
                    data={"name": name, "version": "1"},
                    files={"file": f},
                    timeout=60,
                )
            assert r.status_code == 201, r.text
        yield a, b, keys
    finally:
        for p in reversed(started):
            p.stop()
        redis.stop()


def submit(api: Api, keys: dict[str, dict[str, str]], metrics: list[str]) -> httpx.Response:
    body = factories.job_spec(metrics=metrics, resources={"query_budget": 200})
    return httpx.post(f"{api.url}/v1/jobs", headers=keys["partner"], json=body, timeout=30)


def set_limit(api: Api, keys: dict[str, dict[str, str]], reason: str, **values: int) -> float:
    """Change the partner's limits through one process; when the change was committed."""
    path = f"{api.url}/v1/policies/partners/acme"
    etag = httpx.get(path, headers=keys["operator"], timeout=30).headers["ETag"]
    r = httpx.put(path, headers=keys["operator"] | {"If-Match": etag}, json={"reason": reason, **values}, timeout=30)
    assert r.status_code == 200, r.text
    return time.monotonic()


def test_a_limit_changed_through_one_api_process_applies_on_both_within_a_second(processes):
    a, b, keys = processes
    assert submit(a, keys, ["accuracy"]).status_code == 202
    assert submit(b, keys, ["macro_f1"]).status_code == 202

    changed = set_limit(a, keys, "tighten", max_query_budget=100)
    for api, metrics in ((b, ["balanced_accuracy"]), (a, ["macro_recall"])):
        r = submit(api, keys, metrics)
        assert r.status_code == 422 and r.json()["error"] == "resources_exceed_limit", (api.name, r.text)
        assert r.json()["alternatives"] == ["query_budget <= 100", ASK_OPERATOR]
    assert time.monotonic() - changed < 1.0

    changed = set_limit(b, keys, "loosen", max_query_budget=1000)
    for api, metrics in ((a, ["balanced_accuracy"]), (b, ["macro_recall"])):
        assert submit(api, keys, metrics).status_code == 202, api.name
    assert time.monotonic() - changed < 1.0

    # Jobs in progress too: lowered below what the partner has in progress, new jobs are refused.
    changed = set_limit(a, keys, "one at a time", max_concurrent_jobs=0)
    r = submit(b, keys, ["macro_precision"])
    assert r.status_code == 429 and r.json()["error"] == "too_many_concurrent_jobs", r.text
    assert time.monotonic() - changed < 1.0
