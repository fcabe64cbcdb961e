"""Twins over HTTP: made at registration and paid from the operator's own ε, downloadable by those who
may use the originals, replaceable by an operator's own file."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from service.demo_assets import make_blobs, make_classifier
from service.ledger import service as ledger
from service.quotas.models import EpsilonSpend
from service.registry.models import DatasetVersion
from tests import factories
from tests.harness import Harness, harness


def digest_header(content: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(content).digest()).decode()}:"


def npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def restrict(api: Harness, partner: str, **allowed: list[str]) -> None:
    path = f"/v1/policies/partners/{partner}"
    etag = api.client.get(path, headers=api.operator).headers["ETag"]
    r = api.client.put(path, headers={**api.operator, "If-Match": etag}, json={"reason": "test", **allowed})
    assert r.status_code == 200, r.text


def test_registering_a_dataset_makes_its_twin_from_the_operators_own_epsilon(api, demo_files):
    r = api.client.get("/v1/datasets/demo-blobs/1/twin/provenance", headers=api.operator)
    assert r.status_code == 200, r.text
    twin = r.json()
    assert twin["origin"] == "generated" and twin["of"] == "demo-blobs@1"
    released = twin["provenance"]["released"]
    assert released["epsilon"] == api.settings.twin_epsilon == 1.0
    assert [s["statistic"] for s in released["statistics"]][:2] == ["class_counts", "feature_0.histogram"]
    assert all({"epsilon", "mechanism", "scale"} <= set(s) for s in released["statistics"])
    assert twin["provenance"]["charged_to"] == "operator:ops"
    with api.db() as s:
        dataset = s.execute(select(DatasetVersion).where(DatasetVersion.name == "demo-blobs")).scalar_one()
        spent = s.execute(select(EpsilonSpend).where(EpsilonSpend.dataset_version_id == dataset.id)).scalars().all()
        events = ledger.events_for(s, "dataset:demo-blobs@1")
    assert [(e.principal_id, e.spent_micro) for e in spent] == [(1, 1_000_000)]  # the operator's, and only it
    actions = [e["action"] for e in events]
    assert "privacy.epsilon_spent" in actions and "twin.made" in actions
    made = next(e for e in events if e["action"] == "twin.made")
    assert made["data"]["sha256"] == twin["sha256"] and made["data"]["epsilon"] == 1.0
    # The twin differs from the real data: same schema, none of its rows.
    r = api.client.get("/v1/datasets/demo-blobs/1/twin", headers=api.partner)
    assert r.status_code == 200 and r.headers["repr-digest"] == digest_header(r.content)
    assert hashlib.sha256(r.content).hexdigest() == twin["sha256"]
    with np.load(io.BytesIO(r.content)) as got, np.load(demo_files["data"]) as real:
        assert got["x"].shape == real["x"].shape and got["x"].dtype == real["x"].dtype
        assert set(got["y"].tolist()) == set(real["y"].tolist())
        assert not {tuple(row) for row in real["x"].tolist()} & {tuple(row) for row in got["x"].tolist()}


def test_a_partner_allowed_the_originals_downloads_both_twins_others_are_refused(api):
    for path in ("/v1/datasets/demo-blobs/1/twin", "/v1/models/demo-classifier/1/twin"):
        for who in (api.partner, api.other, api.operator):
            r = api.client.get(path, headers=who)
            assert r.status_code == 200 and r.headers["repr-digest"] == digest_header(r.content), r.text
        r = api.client.get(path, headers=api.researcher)
        assert r.status_code == 403 and r.json()["error"] == "wrong_role"
    restrict(api, "globex", datasets=[], models=[])
    r = api.client.get("/v1/datasets/demo-blobs/1/twin", headers=api.other)
    assert r.status_code == 403 and r.json()["error"] == "dataset_not_allowed"
    r = api.client.get("/v1/models/demo-classifier/1/twin/provenance", headers=api.other)
    assert r.status_code == 403 and r.json()["error"] == "model_not_allowed"
    assert api.client.get("/v1/datasets/demo-blobs/1/twin", headers=api.partner).status_code == 200
    r = api.client.get("/v1/datasets/demo-blobs/9/twin", headers=api.partner)
    assert r.status_code == 404 and r.json()["error"] == "unknown_dataset_version"
    assert r.json()["alternatives"] == ["demo-blobs@1"]


def test_the_stand_in_has_the_models_signature_and_runs(api, demo_files, tmp_path):
    import onnxruntime as ort

    r = api.client.get("/v1/models/demo-classifier/1/twin", headers=api.partner)
    assert r.status_code == 200
    path = tmp_path / "s.onnx"
    path.write_bytes(r.content)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = ort.InferenceSession(str(demo_files["model"]), providers=["CPUExecutionProvider"])
    for a, b in ((got.get_inputs(), want.get_inputs()), (got.get_outputs(), want.get_outputs())):
        assert [(i.name, i.type, i.shape) for i in a] == [(i.name, i.type, i.shape) for i in b]
    assert got.run(None, {"features": np.zeros((4, 16), np.float32)})[0].shape == (4, 3)
    assert r.content != demo_files["model"].read_bytes()
    provenance = api.client.get("/v1/models/demo-classifier/1/twin/provenance", headers=api.partner).json()
    assert provenance["provenance"]["released"].startswith("nothing of the model")
    assert isinstance(provenance["provenance"]["seed"], int)


def test_an_operator_replaces_a_twin_with_a_hand_made_one_of_the_same_schema(api):
    x, y, _ = make_blobs(n=150, seed=11)
    path = "/v1/datasets/demo-blobs/1/twin"
    r = api.client.put(path, headers=api.operator, files={"file": ("t.npz", npz(x[:, :5], y))})
    assert r.status_code == 422 and r.json()["error"] == "invalid_twin" and "(5, 'float32'" in r.json()["detail"]
    r = api.client.put(path, headers=api.operator, files={"file": ("t.npz", npz(x, y.astype(np.float64)))})
    assert r.status_code == 422 and r.json()["error"] == "invalid_twin"
    r = api.client.put(path, headers=api.partner, files={"file": ("t.npz", npz(x, y))})
    assert r.status_code == 403 and r.json()["error"] == "wrong_role"
    r = api.client.put(path, headers=api.operator, files={"file": ("t.npz", npz(x, y))})
    assert r.status_code == 200, r.text
    assert r.json()["origin"] == "uploaded" and r.json()["provenance"]["uploaded_by"] == "operator:ops"
    got = api.client.get(path, headers=api.partner)
    assert got.content == npz(x, y) and r.json()["sha256"] == hashlib.sha256(got.content).hexdigest()


def test_an_operator_replaces_a_stand_in_with_one_of_exactly_its_interface(api, demo_files, tmp_path):
    path = "/v1/models/demo-classifier/1/twin"
    r = api.client.put(path, headers=api.operator, files={"file": ("m.onnx", demo_files["model"].read_bytes())})
    assert r.status_code == 422 and r.json()["error"] == "invalid_stand_in" and "model itself" in r.json()["detail"]
    _, _, means = make_blobs(classes=4)
    wrong = make_classifier(tmp_path / "four.onnx", means)  # 4 classes: another output shape
    r = api.client.put(path, headers=api.operator, files={"file": ("m.onnx", wrong.read_bytes())})
    assert r.status_code == 422 and r.json()["error"] == "invalid_stand_in"
    _, _, means = make_blobs(seed=99)
    mine = make_classifier(tmp_path / "mine.onnx", means).read_bytes()
    r = api.client.put(path, headers=api.operator, files={"file": ("m.onnx", mine)})
    assert r.status_code == 200 and r.json()["origin"] == "uploaded", r.text
    assert api.client.get(path, headers=api.partner).content == mine
    with api.db() as s:
        assert [e["action"] for e in ledger.events_for(s, "model:demo-classifier@1")][-1] == "twin.uploaded"


@pytest.fixture
def no_twin_epsilon(tmp_path, demo_files):
    settings = factories.settings(tmp_path / "data", twin_epsilon=0)
    yield from harness(settings, demo_files)


def test_without_twin_epsilon_no_twin_is_made_and_none_is_spent(no_twin_epsilon):
    api = no_twin_epsilon
    r = api.client.get("/v1/datasets/demo-blobs/1/twin", headers=api.partner)
    assert r.status_code == 404 and r.json()["error"] == "twin_not_available"
    with api.db() as s:
        assert s.execute(select(EpsilonSpend)).scalars().all() == []
        events: list[dict[str, Any]] = ledger.events_for(s, "dataset:demo-blobs@1")
    assert events[-1]["action"] == "twin.skipped" and "0" in events[-1]["data"]["reason"]
    # The stand-in costs nothing and is made regardless.
    assert api.client.get("/v1/models/demo-classifier/1/twin", headers=api.partner).status_code == 200


@pytest.fixture
def small_budget(tmp_path, demo_files):
    settings = factories.settings(tmp_path / "data", twin_epsilon=2.0, dp_epsilon_budget=1.0)
    yield from harness(settings, demo_files)


def test_a_twin_the_operators_budget_cannot_pay_for_is_not_made(small_budget):
    api = small_budget
    assert api.client.get("/v1/datasets/demo-blobs/1/twin", headers=api.operator).status_code == 404
    with api.db() as s:
        events = ledger.events_for(s, "dataset:demo-blobs@1")
        assert s.execute(select(EpsilonSpend.spent_micro)).scalars().all() in ([], [0])
    assert events[-1]["action"] == "twin.skipped" and "epsilon 2.0" in events[-1]["data"]["reason"]
