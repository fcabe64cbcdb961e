"""A worker killed (kill -9) while it runs a reproduction, on real processes (the API under uvicorn,
two Celery workers, a Redis of the test's own, real containers): the reaper of the other worker
ends the run within three leases, the reproduction says it could not run, and the next one runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.jobs.models import Job
from service.reproductions.models import Reproduction
from tests.harness import require_redis
from tests.reliability.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.redis]

LEASE_S = 2.0


def outcome(stack: Stack, job_id: str, reproduction_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = stack.http.get(f"/v1/jobs/{job_id}/reproductions", headers=stack.operator)
        mine = next(x for x in r.json()["reproductions"] if x["id"] == reproduction_id)
        if mine["outcome"] is not None:
            return mine  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"reproduction {reproduction_id} did not end in {timeout_s}s")


def test_worker_killed_while_a_reproduction_runs(tmp_path: Path, demo_files, docker_client) -> None:  # type: ignore[no-untyped-def]
    require_redis()
    with Stack(tmp_path, demo_files, workers=2) as stack:
        job = stack.submitted(suite=stack.sleeper(6))
        assert stack.wait_state(job, {"released"}, timeout_s=90) == "released"
        time.sleep(stack.settings.timing_buckets_s[-1] + 0.1)  # reproducible once its partner sees it released
        asked = stack.http.post(f"/v1/jobs/{job}/reproduce", headers=stack.operator)
        assert asked.status_code == 202, asked.text
        run = asked.json()["id"]
        stack.wait_state(run, {"running"}, timeout_s=60)
        time.sleep(1.5)  # its sandbox is up
        with stack.db() as s:
            owner = s.get(Job, run).lease_owner
        assert owner is not None
        victim = next(i for i, w in enumerate(stack.workers) if w.pid == int(owner.split(":")[1]))
        stack.workers[victim].kill9()
        seen = outcome(stack, job, run, timeout_s=3 * LEASE_S + 4)
        assert (seen["outcome"], seen["reason"], seen["error_class"]) == (
            "could_not_run",
            "run_failed",
            "internal_error",
        )
        with stack.db() as s:
            assert s.get(Job, run).state == "failed"
            assert s.get(Reproduction, run).leaf_index is not None
        # Nothing is stuck: the next reproduction runs on the surviving worker and reproduces.
        again = stack.http.post(f"/v1/jobs/{job}/reproduce", headers=stack.operator)
        assert again.status_code == 202, again.text
        assert outcome(stack, job, again.json()["id"], timeout_s=90)["outcome"] == "reproduced"
