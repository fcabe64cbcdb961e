"""A demo classifier and dataset, made from code (no downloads): Gaussian blobs and the linear
discriminant that separates them, written as an ONNX graph (MatMul, Add, Softmax)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_blobs(
    n: int = 2000, features: int = 16, classes: int = 3, seed: int = 7, spread: float = 0.55
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, spread, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = means[y] + rng.normal(0, 1.0, size=(n, features))
    return x.astype(np.float32), y.astype(np.int64), means


def make_classifier(path: Path, means: np.ndarray) -> Path:
    """For unit-variance blobs the Bayes classifier is softmax(x·μ_k − |μ_k|²/2)."""
    w = means.T.astype(np.float32)
    b = (-0.5 * np.sum(means**2, axis=1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "demo_classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", w.shape[1]])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="evalgate-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_demo(directory: Path, n: int = 2000, seed: int = 7) -> tuple[Path, Path]:
    """Write demo-classifier.onnx and demo-blobs.npz into directory."""
    x, y, means = make_blobs(n=n, seed=seed)
    model = make_classifier(directory / "demo-classifier.onnx", means)
    data = directory / "demo-blobs.npz"
    np.savez(data, x=x, y=y)
    return model, data
