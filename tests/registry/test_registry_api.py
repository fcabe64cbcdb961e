"""Registry through HTTP: content addressing, idempotent re-registration, conflicts, validation."""

import io

import numpy as np
import pytest

from service.registry import storage
from tests.factories import suite_bundle, tar_gz


def post_model(api, name, version, data: bytes):
    return api.client.post(
        "/v1/models", headers=api.operator, data={"name": name, "version": version}, files={"file": ("m.onnx", data)}
    )


def test_model_is_stored_by_digest_and_described_without_weights(api, demo_files):
    import hashlib

    raw = demo_files["model"].read_bytes()
    models = api.client.get("/v1/models", headers=api.partner).json()
    m = next(m for m in models if m["name"] == "demo-classifier")
    assert m["sha256"] == hashlib.sha256(raw).hexdigest()
    assert storage.blob_path(api.settings.data_dir, m["sha256"]).read_bytes() == raw
    assert m["signature"]["inputs"][0]["name"] == "features"
    assert "W" not in str(m["signature"])  # initializer names or values never leave


def test_same_version_same_bytes_is_idempotent_other_bytes_conflict(api, demo_files, tmp_path):
    raw = demo_files["model"].read_bytes()
    assert post_model(api, "demo-classifier", "1", raw).status_code == 200
    from service.demo_assets import make_blobs, make_classifier

    _, _, means = make_blobs(n=10, seed=99)
    other = make_classifier(tmp_path / "other.onnx", means).read_bytes()
    r = post_model(api, "demo-classifier", "1", other)
    assert r.status_code == 409 and r.json()["error"] == "version_taken"


def test_non_onnx_model_is_refused(api):
    r = post_model(api, "junk", "1", b"definitely not onnx")
    assert r.status_code == 422 and r.json()["error"] == "invalid_model"
    assert all(m["name"] != "junk" for m in api.client.get("/v1/models", headers=api.operator).json())


def test_oversized_model_is_refused_by_length(api):
    api.settings.model_max_bytes = 1000
    r = post_model(api, "big", "1", b"x" * 5000)
    assert r.status_code == 413 and r.json()["error"] == "model_too_large"


@pytest.mark.parametrize(
    "arrays, what",
    [
        ({"x": np.zeros((200, 3), np.float32)}, "exactly"),
        ({"x": np.zeros((200, 3), np.float32), "y": np.zeros(199, np.int64)}, "one target per row"),
        ({"x": np.zeros(200, np.float32), "y": np.zeros(200, np.int64)}, "2-D"),
        ({"x": np.zeros((200, 3), np.float32), "y": np.full(200, np.nan, np.float32)}, "NaN"),
        ({"x": np.zeros((200, 3), np.float32), "y": np.full(200, -1, np.int64)}, "0..k-1"),
        ({"x": np.zeros((200, 3), np.float32), "y": np.array(["a"] * 200)}, "numeric"),
        ({"x": np.array([{"a": 1}] * 200, dtype=object).reshape(200, 1), "y": np.zeros(200, np.int64)}, "pickles"),
    ],
)
def test_bad_datasets(api, arrays, what):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    r = api.client.post(
        "/v1/datasets",
        headers=api.operator,
        data={"name": "bad", "version": "1"},
        files={"file": ("d.npz", buf.getvalue())},
    )
    assert r.status_code == 422 and r.json()["error"] == "invalid_dataset" and what in r.json()["detail"]


def test_suite_upload_and_version_conflict(api):
    first = suite_bundle("mine", "print(1)", ["score"])
    r = api.client.post("/v1/suites", headers=api.partner, files={"file": ("s.tar.gz", first)})
    assert r.status_code == 201
    assert api.client.post("/v1/suites", headers=api.partner, files={"file": ("s.tar.gz", first)}).status_code == 200
    r = api.client.post(
        "/v1/suites", headers=api.partner, files={"file": ("s.tar.gz", suite_bundle("mine", "print(2)", ["score"]))}
    )
    assert r.status_code == 409 and r.json()["error"] == "version_taken"


def test_hostile_bundle_through_http(api):
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../etc/cron.d/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    r = api.client.post("/v1/suites", headers=api.partner, files={"file": ("s.tar.gz", buf.getvalue())})
    assert r.status_code == 422 and r.json()["error"] == "bundle_path_traversal"
    api.settings.bundle_max_bytes = 100
    r = api.client.post("/v1/suites", headers=api.partner, files={"file": ("s.tar.gz", tar_gz({"a": "b" * 5000}) * 3)})
    assert r.status_code == 413 and r.json()["error"] == "bundle_too_large"


def test_refused_upload_leaves_no_blob(api):
    import hashlib

    junk = b"not a model at all, and not stored either"
    post_model(api, "junk", "1", junk)
    assert not storage.blob_path(api.settings.data_dir, hashlib.sha256(junk).hexdigest()).exists()
    r = api.client.post(
        "/v1/datasets", headers=api.operator, data={"name": "junk", "version": "1"}, files={"file": ("d.npz", junk)}
    )
    assert r.status_code == 422
    assert not storage.blob_path(api.settings.data_dir, hashlib.sha256(junk).hexdigest()).exists()


def test_suites_whose_code_sees_labels_always_wait_for_an_operator(tmp_path, demo_files):
    from tests import factories
    from tests.factories import rows_bundle, suite_bundle, unique
    from tests.harness import harness

    gen = harness(factories.settings(tmp_path / "data", custom_suites_require_approval=False), demo_files)
    h = next(gen)
    try:
        rows = h.client.post(
            "/v1/suites", headers=h.partner, files={"file": ("s.tar.gz", rows_bundle(unique("rows"), "pass"))}
        )
        metrics = h.client.post(
            "/v1/suites",
            headers=h.partner,
            files={"file": ("s.tar.gz", suite_bundle(unique("labels"), "pass", ["score"]))},
        )
        assert rows.json()["approved"] is True and rows.json()["mode"] == "rows"
        assert metrics.json()["approved"] is False and metrics.json()["mode"] == "metrics"
    finally:
        gen.close()
