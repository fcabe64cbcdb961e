"""Through the HTTP API to a real Celery worker (Redis, subprocess) and real containers, on SQLite
and on Postgres."""

from __future__ import annotations

import pytest

from service.release import service as release_service
from service.release.signing import verify
from tests.factories import CLASSIFICATION
from tests.harness import worker_harness

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_stack(request, tmp_path, demo_files, docker_client):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield from worker_harness(tmp_path, demo_files, database_url=url)


def test_builtin_suite_releases_true_metrics_with_provenance(any_stack, expected_demo_accuracy):
    s = any_stack
    job = s.run(CLASSIFICATION, ["accuracy", "macro_f1", "log_loss", "ece"], seed=7)

    assert job["state"] == "released", job
    result = job["result"]
    assert set(result["metrics"]) == {"accuracy", "macro_f1", "log_loss", "ece"}
    # The released accuracy is the model's real accuracy on the data, rounded to 4 decimals (no noise
    # in this stack's policy).
    assert result["metrics"]["accuracy"] == round(expected_demo_accuracy, 4)
    assert result["disclosure"] == {"suppressed": [], "noise": {}, "bits": result["disclosure"]["bits"]}
    assert 0 <= result["metrics"]["ece"] <= 1 and result["metrics"]["log_loss"] >= 0
    p = result["provenance"]
    assert p["spec_sha256"] == job["spec_sha256"]
    assert p["model"]["sha256"] == job["spec"]["model"]["sha256"]
    assert p["images"]["job"].startswith("sha256:") and p["images"]["sidecar"].startswith("sha256:")
    assert p["seed"] == 7 and s.usage(job["id"])["rows"] == 600  # the suite predicts every row once
    # The SDK speaks the protocol: the sidecar counted no abuse, and the partner has no trip.
    assert s.usage(job["id"])["protocol_errors"] == 0
    assert s.client.get("/v1/partners/acme/suspension", headers=s.operator).json()["trips_today"] == {}
    assert "queries" not in p  # how much a job queried is its own choice: never shown to partners
    key = s.client.get("/v1/attestation-key").json()
    statement = release_service.statement(job["id"], result["metrics"], result["disclosure"], p)
    assert verify(key["public_key"], statement, result["attestation"]["signature"])
    assert not verify(
        key["public_key"],
        {**statement, "metrics": {**result["metrics"], "accuracy": 1.0}},
        result["attestation"]["signature"],
    )


def test_other_partner_sees_404_and_job_list_is_private(any_stack):
    s = any_stack
    job = s.submit(CLASSIFICATION, ["accuracy"])
    assert s.client.get(f"/v1/jobs/{job['id']}", headers=s.other).status_code == 404
    assert s.client.post(f"/v1/jobs/{job['id']}/cancel", headers=s.other).status_code == 404
    assert job["id"] not in [j["id"] for j in s.client.get("/v1/jobs", headers=s.other).json()["jobs"]]
    assert job["id"] in [j["id"] for j in s.client.get("/v1/jobs", headers=s.partner).json()["jobs"]]
    assert s.wait(job["id"])["state"] == "released"
