"""Fixtures that talk to real things: SQLite and Postgres, Redis, Docker, onnxruntime.

Locally a missing service skips the tests that need it; with EVALGATE_TEST_REQUIRE_ALL=1 (CI) it
fails them instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.db import make_engine, make_sessionmaker, migrate
from tests.helpers import WorkerProcess, bearer

POSTGRES_ADMIN_URL = os.environ.get("EVALGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EVALGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_ALL = os.environ.get("EVALGATE_TEST_REQUIRE_ALL") == "1"


def unavailable(what: str, why: object):
    message = f"{what} unavailable: {why}"
    if REQUIRE_ALL:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def make_settings(data_dir: Path, **overrides) -> Settings:
    # Explicit values only: the developer's own EVALGATE_* environment must not leak into tests.
    # Tests that are not about the release gate's budgets get exact values, small time buckets (so they
    # need not wait) and budgets they cannot reach; the gate's own tests set these back.
    base = dict(
        data_dir=data_dir,
        database_url=None,
        broker_url=None,
        min_dataset_rows=100,
        default_timeout_s=60,
        queue=f"evalgate-test-{uuid.uuid4().hex[:8]}",
        dp_mechanism="none",
        timing_buckets_s=[0.25],
        leakage_bits_per_day=1e9,
        dp_epsilon_budget=1e6,
        releases_per_window=100_000,
        max_concurrent_jobs=1000,
    )
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "data")


# -- databases ------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url():
    import psycopg

    name = f"evalgate_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        unavailable("PostgreSQL", e)
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_settings(request, tmp_path) -> Settings:
    """Settings on SQLite and, as a second run of the same test, on a fresh Postgres database."""
    if request.param == "postgres":
        return make_settings(tmp_path / "data", database_url=request.getfixturevalue("postgres_url"))
    return make_settings(tmp_path / "data")


@pytest.fixture
def sessions(db_settings):
    migrate(db_settings.database_url)
    engine = make_engine(db_settings.database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


# -- models and data ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory):
    """A real ONNX classifier and dataset made by the tests (no downloads)."""
    from service.demo_assets import write_demo

    model, data = write_demo(tmp_path_factory.mktemp("demo"), n=600, seed=3)
    return {"model": model, "data": data}


@pytest.fixture(scope="session")
def expected_demo_accuracy(demo_files):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(demo_files["model"]), providers=["CPUExecutionProvider"])
    with np.load(demo_files["data"]) as npz:
        x, y = npz["x"], npz["y"]
    probs = sess.run(None, {"features": x})[0]
    return float(np.mean(probs.argmax(1) == y))


# -- Docker -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client():
    from service.sandbox.client import docker_client as connect
    from service.sandbox.errors import DockerUnavailable

    try:
        client = connect()
    except DockerUnavailable as e:
        unavailable("Docker", e)
    for tag in ("evalgate-job:latest", "evalgate-sidecar:latest"):
        try:
            client.images.get(tag)
        except Exception:
            unavailable("sandbox images", f"{tag} missing: run `make images`")
    return client


# -- the full stack: API (TestClient) + Redis + `evalgate worker` subprocess + Docker ------------------


class Stack:
    def __init__(self, client: TestClient, settings: Settings, operator_key: str, partner_key: str, other_key: str):
        self.client, self.settings = client, settings
        self.operator, self.partner, self.other = bearer(operator_key), bearer(partner_key), bearer(other_key)

    def upload_suite(self, bundle: bytes, approve: bool = True) -> dict:
        r = self.client.post("/v1/suites", headers=self.partner, files={"file": ("suite.tar.gz", bundle)})
        assert r.status_code in (200, 201), r.text
        suite = r.json()
        if approve and not suite["approved"]:
            r = self.client.post(f"/v1/suites/{suite['name']}/{suite['version']}/approve", headers=self.operator)
            assert r.status_code == 200, r.text
        return suite

    def submit(self, suite: str, metrics: list[str], headers=None, **extra) -> dict:
        spec = {"suite": suite, "model": "demo-classifier@1", "dataset": "demo-blobs@1", "metrics": metrics, **extra}
        r = self.client.post("/v1/jobs", headers=headers or self.partner, json=spec)
        assert r.status_code == 202, r.text
        return r.json()

    def wait(self, job_id: str, timeout_s: float = 120, headers=None) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}", headers=headers or self.partner).json()
            if job["state"] in ("released", "rejected", "failed", "cancelled"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout_s}s: {job}")

    def run(self, suite: str, metrics: list[str], headers=None, **extra) -> dict:
        return self.wait(self.submit(suite, metrics, headers=headers, **extra)["id"], headers=headers)


def _redis_or_skip():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as e:
        unavailable("Redis", e)


def build_stack(settings: Settings, demo_files, log_path: Path):
    from service.auth import service as auth
    from service.db import session_scope
    from service.main import create_app

    migrate(settings.database_url)
    with session_scope(make_sessionmaker(make_engine(settings.database_url))) as s:
        keys = [
            auth.create_key(s, name=n, role=r, expires_in=auth.parse_duration("1d"))[1]
            for n, r in (("ops", "operator"), ("acme", "partner"), ("globex", "partner"))
        ]
    # The worker gets exactly the test's settings.
    env = {
        f"EVALGATE_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
        for k, v in settings.model_dump(mode="json").items()
        if v is not None
    }
    worker = WorkerProcess(env, log_path)
    try:
        worker.wait_ready()
        with TestClient(create_app(settings)) as client:
            stack = Stack(client, settings, *keys)
            for kind, name, path in (
                ("models", "demo-classifier", demo_files["model"]),
                ("datasets", "demo-blobs", demo_files["data"]),
            ):
                with open(path, "rb") as f:
                    r = client.post(
                        f"/v1/{kind}", headers=stack.operator, data={"name": name, "version": "1"}, files={"file": f}
                    )
                assert r.status_code == 201, r.text
            yield stack
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_files, docker_client):
    """SQLite + Redis + a worker subprocess + Docker."""
    _redis_or_skip()
    tmp = tmp_path_factory.mktemp("stack")
    settings = make_settings(tmp / "data", broker_url=REDIS_URL)
    yield from build_stack(settings, demo_files, tmp / "worker.log")


# -- the API alone (no worker): records what is enqueued, and whether it was committed by then ----


class RecordingDispatcher:
    """Stands where the broker would be. On enqueue it reads the job through a separate connection,
    which proves the row was committed before the id was handed over."""

    def __init__(self, settings: Settings):
        self.sessions = make_sessionmaker(make_engine(settings.database_url))
        self.enqueued: list[tuple[str, str | None]] = []

    def enqueue(self, job_id: str) -> None:
        from service.jobs.models import Job

        with self.sessions() as s:
            job = s.get(Job, job_id)
            self.enqueued.append((job_id, job.state if job else None))

    def close(self) -> None:
        pass


class Api:
    def __init__(self, client: TestClient, settings: Settings, dispatcher: RecordingDispatcher):
        self.client, self.settings, self.dispatcher = client, settings, dispatcher
        self.sessions = make_sessionmaker(make_engine(settings.database_url))

    def key(self, name: str, role: str, expires: str = "1d") -> dict[str, str]:
        from service.auth import service as auth
        from service.db import session_scope

        with session_scope(self.sessions) as s:
            return bearer(auth.create_key(s, name=name, role=role, expires_in=auth.parse_duration(expires))[1])


def make_api(settings: Settings, demo_files):
    """The HTTP API with keys for each role and the demo model and dataset registered."""
    from service.main import create_app

    migrate(settings.database_url)
    dispatcher = RecordingDispatcher(settings)
    with TestClient(create_app(settings, dispatcher=dispatcher)) as client:
        a = Api(client, settings, dispatcher)
        a.operator, a.partner, a.other = a.key("ops", "operator"), a.key("acme", "partner"), a.key("globex", "partner")
        a.researcher = a.key("curie", "researcher")
        for kind, name, path in (
            ("models", "demo-classifier", demo_files["model"]),
            ("datasets", "demo-blobs", demo_files["data"]),
        ):
            with open(path, "rb") as f:
                r = client.post(
                    f"/v1/{kind}", headers=a.operator, data={"name": name, "version": "1"}, files={"file": f}
                )
            assert r.status_code == 201, r.text
        yield a


@pytest.fixture
def api(db_settings, demo_files):
    """The HTTP API on SQLite and Postgres, with the demo model and dataset registered."""
    yield from make_api(db_settings, demo_files)
