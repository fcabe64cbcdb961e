"""POST /v1/jobs: validation against the registry and limits, canonical spec, enqueue after commit."""

import pytest

from service.canonical import digest
from tests.factories import CLASSIFICATION, CLASSIFICATION_REF, suite_bundle, unique
from tests.harness import Harness

SPEC = {
    "suite": CLASSIFICATION,
    "model": "demo-classifier@1",
    "dataset": "demo-blobs@1",
    "metrics": ["accuracy", "log_loss"],
    "seed": 5,
}


def submit(api, headers=None, **changes):
    return api.client.post("/v1/jobs", headers=headers or api.partner, json={**SPEC, **changes})


def test_valid_job_is_committed_then_enqueued_with_a_canonical_spec(api):
    r = submit(api)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "running"  # what its partner sees until its padded end: not when it leaves the queue
    assert api.dispatcher.enqueued == [(job["id"], "queued")]  # visible from another connection at enqueue time
    assert job["spec_sha256"] == digest(job["spec"])
    assert job["spec"]["metrics"] == ["accuracy", "log_loss"] and job["spec"]["seed"] == 5
    assert len(job["spec"]["model"]["sha256"]) == 64
    assert job["spec"]["resources"]["timeout_s"] == api.settings.default_timeout_s


@pytest.mark.parametrize(
    "changes, status, code, alternative",
    [
        ({"model": "demo-classifier@9"}, 404, "unknown_model_version", "demo-classifier@1"),
        ({"dataset": "demo-blobs@2"}, 404, "unknown_dataset_version", "demo-blobs@1"),
        ({"suite": "classification@9.0.0"}, 404, "unknown_suite_version", CLASSIFICATION_REF),
        ({"model": "no-version"}, 422, "invalid_reference", None),
        ({"metrics": ["accuracy", "weights"]}, 422, "undeclared_metric", "accuracy"),
        ({"metrics": ["accuracy", "accuracy"]}, 422, "undeclared_metric", None),
        ({"resources": {"memory_mb": 999999}}, 422, "resources_exceed_limit", None),
        ({"resources": {"timeout_s": 99999}}, 422, "resources_exceed_limit", None),
        ({"resources": {"gpus": 1}}, 422, "invalid_request", None),
        ({"unexpected": 1}, 422, "invalid_request", None),
        ({"metrics": []}, 422, "invalid_request", None),
        ({"seed": -1}, 422, "invalid_request", None),
        ({"metrics": ["accuracy@old"]}, 422, "invalid_slice", None),
        (
            {"metrics": ["accuracy@old"], "slices": {"old": [{"feature": 99, "op": ">", "value": 1}]}},
            422,
            "invalid_slice",
            None,
        ),
        (
            {"metrics": ["accuracy"], "slices": {"Old": [{"feature": 1, "op": ">", "value": 1}]}},
            422,
            "invalid_request",
            None,
        ),
        (
            {"metrics": ["accuracy"], "slices": {"old": [{"feature": 1, "op": "~", "value": 1}]}},
            422,
            "invalid_request",
            None,
        ),
        ({"output": "no-such-output"}, 422, "unknown_model_output", "probabilities"),
    ],
)
def test_bad_jobs_get_a_clear_error_and_nothing_is_written(api, changes, status, code, alternative):
    r = submit(api, **changes)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code
    if alternative:
        assert alternative in body["alternatives"]
    assert api.client.get("/v1/jobs", headers=api.partner).json()["jobs"] == []
    assert api.dispatcher.enqueued == []


def test_dataset_below_the_minimum_rows_is_refused(api, tmp_path):
    import numpy as np

    path = tmp_path / "tiny.npz"
    np.savez(path, x=np.zeros((10, 16), np.float32), y=np.arange(10, dtype=np.int64) % 3)

    def register():
        with path.open("rb") as f:
            return api.client.post(
                "/v1/datasets", headers=api.operator, data={"name": "tiny", "version": "1"}, files={"file": f}
            )

    refused = register()
    assert refused.status_code == 422 and refused.json()["error"] == "dataset_too_small"
    api.settings.min_dataset_rows = 5  # registered under a looser policy, then the policy tightened
    assert register().status_code == 201
    api.settings.min_dataset_rows = 100
    r = submit(api, dataset="tiny@1")
    assert r.status_code == 422 and r.json()["error"] == "dataset_too_small"


def test_retired_model_is_refused_with_the_active_alternative(api, demo_files):
    with open(demo_files["model"], "rb") as f:
        api.client.post(
            "/v1/models", headers=api.operator, data={"name": "demo-classifier", "version": "2"}, files={"file": f}
        )
    for status in ("deprecated", "retired"):
        assert (
            api.client.post(
                "/v1/models/demo-classifier/1/status", headers=api.operator, json={"status": status}
            ).status_code
            == 200
        )
    r = submit(api)
    assert r.status_code == 403 and r.json()["error"] == "model_retired"
    assert r.json()["alternatives"] == ["demo-classifier@2"]
    back = api.client.post("/v1/models/demo-classifier/1/status", headers=api.operator, json={"status": "active"})
    assert back.status_code == 409 and back.json()["error"] == "invalid_transition"


def test_custom_suite_waits_for_approval_then_is_enqueued(api):
    name = unique("custom")
    r = api.client.post(
        "/v1/suites", headers=api.partner, files={"file": ("s.tar.gz", suite_bundle(name, "print(1)", ["score"]))}
    )
    assert r.status_code == 201 and r.json()["approved"] is False
    job = submit(api, suite=f"{name}@1.0.0", metrics=["score"]).json()
    assert job["state"] == "awaiting_approval" and api.dispatcher.enqueued == []
    # another partner cannot even see (or use) it
    assert submit(api, headers=api.other, suite=f"{name}@1.0.0", metrics=["score"]).status_code == 404
    assert api.client.post(f"/v1/suites/acme/{name}/1.0.0/approve", headers=api.partner).status_code == 403
    assert api.client.post(f"/v1/suites/acme/{name}/1.0.0/approve", headers=api.operator).status_code == 200
    assert api.dispatcher.enqueued == [(job["id"], "queued")]


def test_a_queued_job_cancelled_never_runs_and_its_partner_sees_it_end_at_its_padded_time(api):
    import time

    api.settings.timing_buckets_s = [2.0]
    job = submit(api).json()
    r = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.partner)
    assert r.status_code == 200 and r.json()["state"] == "running"  # as a running job's cancel is answered
    operator = api.client.get(f"/v1/jobs/{job['id']}", headers=api.operator).json()
    assert (operator["state"], operator["error_class"]) == ("cancelled", "cancelled")  # it never runs
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.partner).status_code == 200
    time.sleep(api.settings.timing_buckets_s[-1] + 0.05)
    seen = api.client.get(f"/v1/jobs/{job['id']}", headers=api.partner).json()
    assert (seen["state"], seen["error_class"]) == ("cancelled", "cancelled")
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.partner).json()["state"] == "cancelled"


def test_embedded_worker_without_docker_fails_the_job_instead_of_hanging(db_settings, demo_files, monkeypatch):
    """One machine, no Docker engine: the job ends as internal_error, with the reason for operators only."""
    import time

    from fastapi.testclient import TestClient

    from service.main import create_app

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with TestClient(create_app(db_settings)) as client:
        a = Harness(client, db_settings, None)
        a.register_demo(demo_files)
        job = a.submit(CLASSIFICATION, ["accuracy"])
        deadline = time.monotonic() + 30
        while (j := client.get(f"/v1/jobs/{job['id']}", headers=a.partner).json())["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert (j["state"], j["error_class"]) == ("failed", "internal_error")
    assert "Docker" not in str(j)
    assert "No Docker engine" in a.operator_log(job["id"])
