"""The attack battery's helpers: every test uploads a suite whose code performs one attack, submits
a job through the HTTP API, and the real worker runs it in the real sandbox, under runc and gVisor.

Each test asserts that the attack failed and that nothing but an error class or gated metrics came
back: the attack prints MARKER, and MARKER must never appear in anything the partner can read."""

from __future__ import annotations

import json

from tests.factories import rows_bundle, suite_bundle, unique
from tests.harness import Harness

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


def attack(stack: Harness, code: str, metrics: list[str], rows: bool = False, **extra) -> dict:  # type: ignore[no-untyped-def]
    """Run `code` as a partner suite (rows mode: one that writes per-row outputs); return the job as
    the partner sees it, after checking that nothing the attack printed reached the partner."""
    bundle = rows_bundle(unique("attack"), code) if rows else suite_bundle(unique("attack"), code, metrics)
    suite = stack.upload_suite(bundle)
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
        "advice",  # a fixed sentence per error class
        "approval",  # an approval request above policy, if the partner made one
        "licenses",  # the model's and dataset's terms, set by an operator
        "target",  # what the job ran on (fixed: the partner chose it)
        "twin",  # a twin job's output and verdict: None on a real job, always
    }
    assert job["twin"] is None and job["target"] == "real"
    assert job["started_at"] is None  # partners do not see when a job left the queue
    if job["result"]:
        assert set(job["result"]) == {"metrics", "disclosure", "provenance", "attestation", "released_at"}
    return job


def released(job: dict) -> dict[str, float]:
    assert job["state"] == "released", (job["state"], job["error_class"])
    return job["result"]["metrics"]  # type: ignore[no-any-return]


def failed_as(job: dict, error_class: str) -> None:
    assert (job["state"], job["error_class"]) in {("failed", error_class), ("rejected", error_class)}, (
        job["state"],
        job["error_class"],
    )
    assert job["result"] is None
