"""Fixtures that wire tests to real things: SQLite and Postgres, Redis, Docker, onnxruntime.

Builders live in tests/factories.py and tests/harness.py; nothing here is imported by a test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import make_engine, migrate
from service.schema import make_sessionmaker
from tests import factories
from tests.harness import POSTGRES_ADMIN_URL, Harness, harness, unavailable, worker_harness


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return factories.settings(tmp_path / "data")


# -- databases ------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh Postgres database, dropped afterwards."""
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
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on SQLite and, as a second run of the same test, on a fresh Postgres database."""
    if request.param == "postgres":
        return factories.settings(tmp_path / "data", database_url=request.getfixturevalue("postgres_url"))
    return factories.settings(tmp_path / "data")


@pytest.fixture
def sessions(db_settings: Settings) -> Iterator[sessionmaker[Session]]:
    url = str(db_settings.database_url)
    migrate(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


# -- models and data ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real ONNX classifier and dataset made by the tests (no downloads)."""
    from service.demo_assets import write_demo

    model, data = write_demo(tmp_path_factory.mktemp("demo"), n=600, seed=3)
    return {"model": model, "data": data}


@pytest.fixture(scope="session")
def expected_demo_accuracy(demo_files: dict[str, Path]) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(demo_files["model"]), providers=["CPUExecutionProvider"])
    with np.load(demo_files["data"]) as npz:
        x, y = npz["x"], npz["y"]
    probs = sess.run(None, {"features": x})[0]
    return float(np.mean(probs.argmax(1) == y))


# -- Docker -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
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


# -- the harness --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_files: dict[str, Path], docker_client) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    """SQLite + Redis + a worker subprocess + Docker."""
    yield from worker_harness(tmp_path_factory.mktemp("stack"), demo_files)


@pytest.fixture
def api(db_settings: Settings, demo_files: dict[str, Path]) -> Iterator[Harness]:
    """The HTTP API on SQLite and Postgres, with the demo model and dataset registered; jobs are
    recorded, not run."""
    yield from harness(db_settings, demo_files)
