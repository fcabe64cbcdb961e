"""A model's stand-in: exactly its inputs and outputs, random weights, runs in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.demo_assets import write_demo
from service.inference import stand_in
from service.inference.model_info import describe_model


def made(original: Path, tmp_path: Path, seed: int = 1) -> Path:
    _, contract, _ = describe_model(original, 1)
    path = tmp_path / f"stand-in-{seed}.onnx"
    path.write_bytes(stand_in.build(original, contract.as_dict(), seed))
    return path


def io(path: Path) -> list[tuple[str, str, list[object]]]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [(a.name, a.type, list(a.shape)) for a in [*s.get_inputs(), *s.get_outputs()]]


def test_the_stand_in_of_the_demo_model_has_its_signature_and_other_weights(tmp_path):
    original, data = write_demo(tmp_path, n=300)
    path = made(original, tmp_path)
    assert (
        io(path)
        == io(original)
        == [("features", "tensor(float)", ["batch", 16]), ("probabilities", "tensor(float)", ["batch", 3])]
    )
    want, _, _ = describe_model(original, 1)
    got = stand_in.check(original, path, 1)
    assert got["signature"] == want and got["contract"]["output_kind"] == "probabilities"
    weights = {numpy_helper.to_array(t).tobytes() for t in onnx.load(str(original)).graph.initializer}
    assert not weights & {numpy_helper.to_array(t).tobytes() for t in onnx.load(str(path)).graph.initializer}
    with np.load(data) as npz:
        x = npz["x"][:50]
    real = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    fake = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    assert fake.shape == real.shape and fake.dtype == real.dtype
    assert np.allclose(fake.sum(axis=1), 1, atol=1e-5) and not np.allclose(fake, real, atol=1e-2)


def test_a_scikit_learn_classifier_with_zipmap_and_labels_is_stood_in_for(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = rng.integers(0, 4, size=200)
    original = tmp_path / "sk.onnx"
    original.write_bytes(to_onnx(LogisticRegression().fit(x, y), x[:1]).SerializeToString())
    path = made(original, tmp_path)
    assert io(path) == io(original)
    assert stand_in.interface(path) == stand_in.interface(original)
    got = stand_in.check(original, path, 1)
    assert got["contract"]["classes"] == 4 and got["contract"]["labels"] == ["output_label"]


def test_symbolic_dimensions_and_extra_inputs_are_kept(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["rows", "w"], ["score"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("rows", TensorProto.DOUBLE, ["n", 4]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["n", "m"]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.DOUBLE, ["n", 1])],
        initializer=[numpy_helper.from_array(np.ones((4, 1)), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    original = tmp_path / "two.onnx"
    onnx.save(model, str(original))
    path = tmp_path / "s.onnx"
    path.write_bytes(stand_in.build(original, {}, 3))
    assert stand_in.interface(path) == stand_in.interface(original)
    assert (
        io(path)
        == io(original)
        == [
            ("rows", "tensor(double)", ["n", 4]),
            ("mask", "tensor(int64)", ["n", "m"]),
            ("score", "tensor(double)", ["n", 1]),
        ]
    )
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"rows": np.ones((3, 4)), "mask": np.zeros((3, 2), dtype=np.int64)}
    )[0]
    assert out.shape == (3, 1) and out.dtype == np.float64


def test_a_stand_in_is_refused_when_it_is_the_model_or_has_another_interface(tmp_path):
    original, _ = write_demo(tmp_path / "a", n=200)
    with pytest.raises(stand_in.StandInUnsupported, match="the model itself"):
        stand_in.check(original, original, 1)
    other = tmp_path / "other.onnx"
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["features"], ["probabilities"], axis=1)],
        "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(other))
    with pytest.raises(stand_in.StandInUnsupported, match="differ"):
        stand_in.check(original, other, 1)


def test_a_string_output_cannot_be_stood_in_for(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["names"], ["out"])],
        "strings",
        [helper.make_tensor_value_info("names", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    original = tmp_path / "strings.onnx"
    onnx.save(model, str(original))
    with pytest.raises(stand_in.StandInUnsupported, match="upload a stand-in"):
        stand_in.build(original, {}, 1)
