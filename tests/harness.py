"""The one harness every service-level test drives: the real API app (FastAPI's TestClient) with a
key for each role and the demo model and dataset registered, and either a real Celery worker (a
subprocess on the real Redis, running real containers) or a dispatcher that records what was
enqueued and whether it was committed by then.

Also: which real services answer (locally a missing one skips the tests that need it; with
EVALGATE_TEST_REQUIRE_ALL=1, as in CI, it fails them instead)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import make_engine, migrate, session_scope
from service.jobs.models import Job
from service.jobs.states import TERMINAL
from service.ledger import service as ledger
from service.schema import make_sessionmaker
from tests import factories

REPO = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get("EVALGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EVALGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_ALL = os.environ.get("EVALGATE_TEST_REQUIRE_ALL") == "1"


def unavailable(what: str, why: object) -> None:
    message = f"{what} unavailable: {why}"
    if REQUIRE_ALL:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as e:
        unavailable("Redis", e)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the EVALGATE_* environment a process of the service reads them from (None as
    "null", which Settings reads back as None)."""
    return {
        f"EVALGATE_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
        for k, v in settings.model_dump(mode="json").items()
    }


class WorkerProcess:
    """`evalgate worker` as a subprocess, consuming a queue of its own on the real Redis, with
    exactly the test's settings."""

    def __init__(self, settings: Settings, log_path: Path):
        env = settings_env(settings)
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1"],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if " ready." in text:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class RecordingDispatcher:
    """Stands where the broker would be. On enqueue it reads the job through a separate connection,
    which proves the row was committed before the id was handed over."""

    def __init__(self, settings: Settings):
        self.sessions = make_sessionmaker(make_engine(str(settings.database_url)))
        self.enqueued: list[tuple[str, str | None]] = []
        self.twin_lane: list[str] = []  # the jobs of `enqueued` handed to the twin lane

    def enqueue(self, job_id: str, twin: bool = False) -> None:
        if twin:
            self.twin_lane.append(job_id)
        with self.sessions() as s:
            job = s.get(Job, job_id)
            self.enqueued.append((job_id, job.state if job else None))

    def waiting(self) -> set[str]:
        return set()

    def close(self) -> None:
        pass


class Harness:
    def __init__(self, client: TestClient, settings: Settings, dispatcher: RecordingDispatcher | None):
        self.client, self.settings, self.dispatcher = client, settings, dispatcher
        self.sessions = make_sessionmaker(make_engine(str(settings.database_url)))
        self.operator = self.key("ops", "operator")
        self.partner = self.key("acme", "partner")
        self.other = self.key("globex", "partner")
        self.researcher = self.key("curie", "researcher")

    def key(self, name: str, role: str, expires: str = "1d") -> dict[str, str]:
        with session_scope(self.sessions) as s:
            return factories.bearer(factories.key(s, name, role, expires))

    @contextmanager
    def db(self) -> Iterator[Session]:
        with session_scope(self.sessions) as s:
            yield s

    def register_demo(self, demo_files: dict[str, Path]) -> None:
        for kind, name, path in (
            ("models", "demo-classifier", demo_files["model"]),
            ("datasets", "demo-blobs", demo_files["data"]),
        ):
            with open(path, "rb") as f:
                r = self.client.post(
                    f"/v1/{kind}", headers=self.operator, data={"name": name, "version": "1"}, files={"file": f}
                )
            assert r.status_code == 201, r.text

    def upload_suite(self, bundle: bytes, approve: bool = True, headers: dict[str, str] | None = None) -> dict:
        r = self.client.post("/v1/suites", headers=headers or self.partner, files={"file": ("suite.tar.gz", bundle)})
        assert r.status_code in (200, 201), r.text
        suite = r.json()
        if approve and not suite["approved"]:
            r = self.client.post(
                f"/v1/suites/{suite['owner']}/{suite['name']}/{suite['version']}/approve", headers=self.operator
            )
            assert r.status_code == 200, r.text
        return suite

    def post_job(self, headers: dict[str, str] | None = None, **spec: Any) -> httpx.Response:
        """POST /v1/jobs with the demo model and dataset unless `spec` says otherwise."""
        body = factories.job_spec(**spec)
        return self.client.post("/v1/jobs", headers=headers or self.partner, json=body)

    def submit(self, suite: str, metrics: list[str], headers: dict[str, str] | None = None, **extra: Any) -> dict:
        r = self.post_job(headers, suite=suite, metrics=metrics, **extra)
        assert r.status_code == 202, r.text
        return r.json()  # type: ignore[no-any-return]

    def wait(self, job_id: str, timeout_s: float = 120, headers: dict[str, str] | None = None) -> dict:
        deadline = time.monotonic() + timeout_s
        job: dict = {}
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}", headers=headers or self.partner).json()
            if job["state"] in TERMINAL:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout_s}s: {job}")

    def run(self, suite: str, metrics: list[str], headers: dict[str, str] | None = None, **extra: Any) -> dict:
        return self.wait(self.submit(suite, metrics, headers=headers, **extra)["id"], headers=headers)

    def budget(self, headers: dict[str, str] | None = None, **params: Any) -> dict:
        r = self.client.get("/v1/budget", headers=headers or self.partner, params=params)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def events(self, job_id: str) -> list[dict]:
        """The job's audit events (operators' view)."""
        with self.db() as s:
            return ledger.events_for(s, f"job:{job_id}")

    def usage(self, job_id: str) -> dict[str, Any]:
        """The job's model use as the sidecar counted it (operators' view; never shown to partners)."""
        with self.db() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.outcome is not None
            return dict(job.outcome["usage"])

    def outcome(self, job_id: str) -> dict[str, Any]:
        """The sandbox's facts about the job: exit code, OOM flags, the sidecar's memory (operators' view)."""
        with self.db() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.outcome is not None
            return dict(job.outcome)

    def operator_log(self, job_id: str) -> str:
        with self.db() as s:
            job = s.get(Job, job_id)
            assert job is not None
            return job.operator_log or ""


def harness(settings: Settings, demo_files: dict[str, Path], worker_log: Path | None = None) -> Iterator[Harness]:
    """The API on `settings`. With `worker_log`, jobs run on a real worker subprocess (needs Redis
    as the broker); without, a RecordingDispatcher records them."""
    from service.main import create_app

    migrate(str(settings.database_url))
    worker = WorkerProcess(settings, worker_log) if worker_log is not None else None
    dispatcher = None if worker is not None else RecordingDispatcher(settings)
    try:
        if worker is not None:
            worker.wait_ready()
        with TestClient(create_app(settings, dispatcher=dispatcher)) as client:
            h = Harness(client, settings, dispatcher)
            h.register_demo(demo_files)
            yield h
    finally:
        if worker is not None:
            worker.stop()


def worker_harness(tmp: Path, demo_files: dict[str, Path], **overrides: Any) -> Iterator[Harness]:
    """SQLite (unless overridden) + Redis + a worker subprocess + Docker."""
    require_redis()
    settings = factories.settings(tmp / "data", broker_url=REDIS_URL, **overrides)
    yield from harness(settings, demo_files, worker_log=tmp / "worker.log")


def concurrently(fn: Callable[[int], Any], n: int) -> list:
    """fn(0) ... fn(n-1) in n threads at once; their results, in no particular order. An exception in
    any thread is raised here, so a failure can never pass unseen."""
    results, errors = [], []

    def run(i: int) -> None:
        try:
            results.append(fn(i))
        except Exception as e:  # any error in a thread must fail the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
