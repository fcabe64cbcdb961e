"""The attack battery: every test uploads a suite whose code performs one attack, submits a job
through the HTTP API, and the real worker runs it in the real sandbox, under runc and under gVisor.

Each test asserts that the attack failed and that nothing but an error class or gated metrics came
back: the attack prints MARKER, and MARKER must never appear in anything the partner can read."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REDIS_URL, _redis_or_skip, build_stack, make_settings, unavailable
from tests.helpers import suite_bundle, unique

MARKER = "LEAKMARKER-7f3a9c"

# Prepended to attacks that search the whole filesystem: every path with its lstat, /proc, /sys and
# /dev left out (their files are not stored anywhere).
WALK = """
import os as _os
def every_file(skip=("/proc", "/sys", "/dev")):
    for root, dirs, files in _os.walk("/", onerror=lambda e: None):
        if root.startswith(skip):
            dirs[:] = []
            continue
        for f in files:
            p = _os.path.join(root, f)
            try:
                yield p, _os.lstat(p)
            except OSError:
                pass
"""


@pytest.fixture(scope="module", params=["runc", "runsc"])
def stack(request, tmp_path_factory, demo_files, docker_client):
    from service.sandbox.runtimes import runsc_available

    _redis_or_skip()
    if request.param == "runsc" and not runsc_available(docker_client):
        unavailable("gVisor", "the engine lacks the evalgate runsc runtimes: run `evalgate sandbox setup`")
    tmp = tmp_path_factory.mktemp(f"battery-{request.param}")
    settings = make_settings(tmp / "data", broker_url=REDIS_URL, docker_runtime=request.param, default_timeout_s=30)
    yield from build_stack(settings, demo_files, tmp / "worker.log")


def attack(stack, code: str, metrics: list[str], **extra) -> dict:
    """Run `code` as a partner suite; return the job as the partner sees it, after checking that
    nothing the attack printed reached the partner."""
    suite = stack.upload_suite(suite_bundle(unique("attack"), code, metrics))
    job = stack.run(f"{suite['name']}@{suite['version']}", metrics, **extra)
    seen = json.dumps(job) + stack.client.get("/v1/jobs", headers=stack.partner).text
    assert MARKER not in seen, "job output reached the partner"
    if job["result"]:  # it really ran under the runtime this module is about
        assert job["result"]["provenance"]["runtime"] == stack.settings.docker_runtime
    assert set(job) == {
        "id",
        "state",
        "error_class",
        "spec",
        "spec_sha256",
        "created_at",
        "started_at",
        "finished_at",
        "result",
        "reused",
    }
    assert job["started_at"] is None  # partners do not see when a job left the queue
    if job["result"]:
        assert set(job["result"]) == {"metrics", "disclosure", "provenance", "attestation", "released_at"}
    return job


def released(job: dict) -> dict[str, float]:
    assert job["state"] == "released", (job["state"], job["error_class"])
    return job["result"]["metrics"]


def failed_as(job: dict, error_class: str) -> None:
    assert (job["state"], job["error_class"]) in {("failed", error_class), ("rejected", error_class)}, (
        job["state"],
        job["error_class"],
    )
    assert job["result"] is None


def operator_log(stack, job_id: str) -> str:
    from service.db import make_engine, make_sessionmaker, session_scope
    from service.jobs.models import Job

    with session_scope(make_sessionmaker(make_engine(stack.settings.database_url))) as s:
        return s.get(Job, job_id).operator_log or ""


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/security/" in str(item.fspath):
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.redis)
