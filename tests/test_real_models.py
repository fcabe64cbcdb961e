"""Right numbers on real models: ordinary scikit-learn classifiers exported with skl2onnx (with and
without ZipMap) go through the API, the real worker and the real sandbox with the built-in suite, and
the released metrics equal scikit-learn's own on the same data (noise off)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn import metrics as sk
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from tests.factories import CLASSIFICATION
from tests.harness import Harness, worker_harness

pytestmark = [pytest.mark.docker, pytest.mark.redis]
ROWS = 600


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x, y = make_classification(n_samples=1800, n_features=10, n_informative=6, n_classes=3, flip_y=0.05, random_state=0)
    x = x.astype(np.float32)
    return {"x_train": x[:1200], "y_train": y[:1200], "x": x[1200:], "y": y[1200:].astype(np.int64)}


@pytest.fixture(scope="module")
def real(tmp_path_factory, demo_files, docker_client, data) -> Harness:  # type: ignore[no-untyped-def]
    stack = worker_harness(tmp_path_factory.mktemp("real"), demo_files)
    h = next(stack)
    register_dataset(h, "real-data", data["x"], data["y"])
    yield h
    stack.close()


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def register_dataset(h: Harness, name: str, x: np.ndarray, y: np.ndarray, **form: str):  # type: ignore[no-untyped-def]
    r = h.client.post(
        "/v1/datasets",
        headers=h.operator,
        data={"name": name, "version": "1", **form},
        files={"file": ("d.npz", npz(x=x, y=y))},
    )
    return r


def register_model(h: Harness, name: str, model: bytes, **form: str) -> dict:
    r = h.client.post(
        "/v1/models", headers=h.operator, data={"name": name, "version": "1", **form}, files={"file": ("m.onnx", model)}
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


ESTIMATORS = {
    "logistic": lambda: LogisticRegression(max_iter=1000),
    "forest": lambda: RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0),
    "boosting": lambda: GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0),
    "mlp": lambda: MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=0),
}


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "tensor"])
@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_sklearn_classifiers_give_scikit_learns_numbers(real, data, kind, zipmap):
    estimator = ESTIMATORS[kind]().fit(data["x_train"], data["y_train"])
    exported = to_onnx(estimator, data["x"][:1], options={id(estimator): {"zipmap": zipmap}}, target_opset=17)
    name = f"{kind}-{'zipmap' if zipmap else 'tensor'}"
    model = register_model(real, name, exported.SerializeToString())
    contract = model["contract"]
    assert contract["classes"] == 3 and contract["features"] == 10 and contract["output_kind"] == "probabilities"
    assert len(contract["scores"]) == 1 and len(contract["labels"]) == 1  # the label comes first: not read
    metrics = ["accuracy", "macro_f1", "log_loss", "balanced_accuracy", "misclassified"]
    job = real.run(CLASSIFICATION, metrics, model=f"{name}@1", dataset="real-data@1")
    assert job["state"] == "released", (job["state"], job["error_class"], real.operator_log(job["id"]))
    released = job["result"]["metrics"]
    y, proba = data["y"], estimator.predict_proba(data["x"])
    pred = proba.argmax(axis=1)
    assert released["accuracy"] == round(sk.accuracy_score(y, pred), 4)
    assert released["macro_f1"] == round(sk.f1_score(y, pred, average="macro"), 4)
    assert released["balanced_accuracy"] == round(sk.balanced_accuracy_score(y, pred), 4)
    assert released["misclassified"] == int(np.sum(pred != y))
    assert abs(released["log_loss"] - sk.log_loss(y, proba)) <= 2e-4  # float32 in the model, float64 here
    provenance = job["result"]["provenance"]
    assert provenance["rows"]["output"] == contract["scores"][0] and provenance["rows"]["role"] == "probabilities"
    assert provenance["inference"]["intra_op_threads"] == 2 and provenance["inference"]["onnxruntime"]
    assert provenance["model"]["inference"]["intra_op_threads"] == 2


def linear_model(path: Path, w: np.ndarray, softmax: bool, labels_only: bool = False) -> bytes:
    """features (n, d) @ W (d, k): logits, probabilities (with Softmax) or only the argmax label."""
    nodes = [helper.make_node("MatMul", ["features", "W"], ["logits"])]
    k = w.shape[1]
    if labels_only:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])]
    elif softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
        outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", k])]
    else:
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", w.shape[0]])],
        outputs,
        initializer=[numpy_helper.from_array(w.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_logits_are_recognised_and_soft_maxed_once(real, data, tmp_path):
    w = np.random.default_rng(0).normal(size=(10, 3)) * 0.8
    model = register_model(real, "logits-only", linear_model(tmp_path, w, softmax=False))
    assert model["contract"]["output_kind"] == "logits" and model["contract"]["scores"] == ["logits"]
    job = real.run(CLASSIFICATION, ["log_loss", "accuracy"], model="logits-only@1", dataset="real-data@1")
    assert job["state"] == "released", real.operator_log(job["id"])
    z = data["x"].astype(np.float64) @ w.astype(np.float32).astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    # Probabilities are clipped at float32's epsilon, as scikit-learn clips a model's float32 output.
    expected = -np.mean(np.log(np.clip(p[np.arange(len(p)), data["y"]], np.finfo(np.float32).eps, 1.0)))
    assert abs(job["result"]["metrics"]["log_loss"] - expected) <= 2e-4
    # An operator who says "probabilities" of logits is told at registration.
    r = real.client.post(
        "/v1/models",
        headers=real.operator,
        data={"name": "logits-claimed", "version": "1", "output_kind": "probabilities"},
        files={"file": ("m.onnx", linear_model(tmp_path, w, softmax=False))},
    )
    assert r.status_code == 422 and r.json()["error"] == "invalid_model" and "logits" in r.json()["detail"]


def test_a_label_only_model_gets_label_metrics_and_a_reason_for_the_others(real, data, tmp_path):
    w = np.random.default_rng(1).normal(size=(10, 3))
    register_model(real, "labels-only", linear_model(tmp_path, w, softmax=False, labels_only=True), classes="3")
    r = real.post_job(
        suite=CLASSIFICATION, metrics=["accuracy", "log_loss"], model="labels-only@1", dataset="real-data@1"
    )
    assert r.status_code == 422 and r.json()["error"] == "metric_needs_probabilities", r.text
    assert "accuracy" in r.json()["alternatives"] and "log_loss" not in r.json()["alternatives"]
    job = real.run(CLASSIFICATION, ["accuracy", "macro_f1"], model="labels-only@1", dataset="real-data@1")
    assert job["state"] == "released", real.operator_log(job["id"])
    pred = (data["x"].astype(np.float32) @ w.astype(np.float32)).argmax(axis=1)
    assert job["result"]["metrics"]["accuracy"] == round(sk.accuracy_score(data["y"], pred), 4)


def test_incompatible_jobs_are_refused_before_anything_is_spent(real, data, tmp_path):
    w = np.random.default_rng(2).normal(size=(10, 3))
    register_model(real, "fit-check", linear_model(tmp_path, w, softmax=True))
    before = real.budget()
    # A 10-feature model on a 9-feature dataset.
    assert register_dataset(real, "narrow", data["x"][:, :9], data["y"]).status_code == 201
    r = real.post_job(suite=CLASSIFICATION, metrics=["accuracy"], model="fit-check@1", dataset="narrow@1")
    assert r.status_code == 422 and r.json()["error"] == "model_dataset_mismatch", r.text
    assert "takes 10 features" in r.json()["detail"] and "real-data@1" in r.json()["alternatives"]
    # A 3-class model on a binary dataset.
    assert register_dataset(real, "binary", data["x"], (data["y"] > 0).astype(np.int64)).status_code == 201
    r = real.post_job(suite=CLASSIFICATION, metrics=["accuracy"], model="fit-check@1", dataset="binary@1")
    assert r.status_code == 422 and r.json()["error"] == "model_dataset_mismatch" and "3 classes" in r.json()["detail"]
    after = real.budget()
    assert after["model_rows"]["used"] == before["model_rows"]["used"]
    assert after["leakage_bits"]["used"] == before["leakage_bits"]["used"]


def test_datasets_with_nan_are_refused_unless_accepted_knowingly(real, data):
    x = data["x"].copy()
    x[3, 2] = np.nan
    r = register_dataset(real, "holes", x, data["y"])
    assert r.status_code == 422 and r.json()["error"] == "dataset_has_nan" and "1 NaN" in r.json()["detail"]
    r = register_dataset(real, "holes", x, data["y"], allow_nan="true")
    assert r.status_code == 201 and "NaN" in r.json()["warnings"][0]
    y = data["y"].copy()
    y[y == 1] = 2  # class 1 has no rows
    r = register_dataset(real, "gappy", data["x"], y)
    assert r.status_code == 422 and r.json()["error"] == "dataset_empty_class"


def test_a_forest_with_tied_rows_releases_the_same_numbers_whatever_the_cpus(real):
    """20 trees on noisy binary data: some rows tie, and onnxruntime's sums (so those rows' labels)
    depend on its thread count. The model version's threads are fixed, whatever a job's CPUs."""
    x, y = make_classification(n_samples=3000, n_features=8, n_informative=4, n_classes=2, flip_y=0.3, random_state=1)
    x = x.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    exported = to_onnx(forest, x[:1], options={id(forest): {"zipmap": False}}, target_opset=17)
    register_model(real, "tied-forest", exported.SerializeToString())
    assert register_dataset(real, "tied-data", x, y.astype(np.int64)).status_code == 201
    spec = dict(model="tied-forest@1", dataset="tied-data@1")
    one = real.run(CLASSIFICATION, ["accuracy", "misclassified"], resources={"cpus": 1}, **spec)
    two = real.run(CLASSIFICATION, ["accuracy", "misclassified"], headers=real.other, resources={"cpus": 2}, **spec)
    assert one["state"] == two["state"] == "released"
    assert one["result"]["metrics"] == two["result"]["metrics"]
    assert one["result"]["provenance"]["inference"] == two["result"]["provenance"]["inference"]
