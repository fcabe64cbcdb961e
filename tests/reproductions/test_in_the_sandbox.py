"""Reproductions of a real release: the built-in suite on the real ONNX model, through the HTTP API,
a real Celery worker (Redis, subprocess) and real containers."""

from __future__ import annotations

import time

import pytest

from service.jobs.models import Job
from service.quotas.models import BudgetReservation
from service.release import service as release_service
from service.transparency import service as tlog
from tests.factories import CLASSIFICATION
from tests.harness import Harness

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def reproduced(s: Harness, job_id: str, timeout_s: float = 120) -> dict:
    """Ask as the operator, and wait for the outcome."""
    r = s.client.post(f"/v1/jobs/{job_id}/reproduce", headers=s.operator)
    assert r.status_code == 202, r.text
    asked = r.json()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = s.client.get(f"/v1/jobs/{job_id}/reproductions", headers=s.operator).json()["reproductions"]
        mine = next(x for x in found if x["id"] == asked["id"])
        if mine["outcome"] is not None:
            return mine  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"reproduction {asked['id']} did not end in {timeout_s}s")


def log_size(s: Harness) -> int:
    with s.db() as db:
        return tlog.size(db)


@pytest.fixture(scope="module")
def released(stack: Harness) -> str:
    job = stack.run(CLASSIFICATION, ["accuracy", "macro_f1", "log_loss"], seed=7)
    assert job["state"] == "released", job
    return str(job["id"])


def test_a_real_release_reproduces_charged_to_the_operator(stack, released):
    s = stack
    before = s.client.get(f"/v1/jobs/{released}", headers=s.operator).json()
    partner = s.budget()
    size = log_size(s)
    seen = reproduced(s, released)
    assert (seen["outcome"], seen["reason"], seen["error_class"]) == ("reproduced", None, None), seen
    assert log_size(s) == size + 1 and seen["log"]["leaf_index"] == size
    assert s.client.get(f"/v1/jobs/{released}", headers=s.operator).json()["result"] == before["result"]
    with s.db() as db:
        run = db.get(Job, seen["id"])
        reservation = db.get(BudgetReservation, seen["id"])
        assert run.principal.name == "ops" and run.state == "compared" and run.reproduces == released
        original = db.get(BudgetReservation, released)
        assert original.principal_id != run.principal_id  # the partner's
        # The operator is charged exactly the model rows the original was granted (here all 600).
        assert reservation.principal_id == run.principal_id and reservation.rows == original.rows == 600
        assert reservation.ran
        assert (reservation.epsilon_micro, reservation.millibits) == (0, 0)
        # The same images, the sandbox named for the run (its own containers were made and removed).
        assert run.outcome["images"] == before["result"]["provenance"]["images"]
    assert s.usage(seen["id"])["rows"] == 600
    after = s.budget()
    assert after["model_rows"]["used"] == partner["model_rows"]["used"]
    assert after["leakage_bits"]["used"] == partner["leakage_bits"]["used"]
    assert after["epsilon"] == partner["epsilon"]


def test_a_tampered_reference_differs_and_a_missing_image_could_not_run(stack, released):
    s = stack
    with s.db() as db:
        result = release_service.existing(db, released)
        assert result is not None and result.raw_hmac is not None
        kept, result.raw_hmac = result.raw_hmac, "f" * 64
    try:
        seen = reproduced(s, released)
        assert seen["outcome"] == "differs", seen
    finally:
        with s.db() as db:
            result = release_service.existing(db, released)
            assert result is not None
            result.raw_hmac = kept
    # The host no longer has the job image the release recorded (as after `docker image prune -a`).
    with s.db() as db:
        result = release_service.existing(db, released)
        assert result is not None
        provenance = dict(result.provenance)
        images = dict(provenance["images"])
        provenance["images"] = {**images, "job": "sha256:" + "0" * 64}
        result.provenance = provenance
    try:
        seen = reproduced(s, released)
        assert (seen["outcome"], seen["reason"]) == ("could_not_run", "image_missing"), seen
    finally:
        with s.db() as db:
            result = release_service.existing(db, released)
            assert result is not None
            result.provenance = {**result.provenance, "images": images}
    assert reproduced(s, released)["outcome"] == "reproduced"  # the images recorded are still there
