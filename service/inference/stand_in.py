"""A model version's stand-in: an ONNX graph with exactly the original's inputs and outputs (names,
element types, shapes with their symbolic dimensions) and random weights, for partners to develop
against (service.twins).

What is read of the original: its graph's declared input and output types (`graph.input` and
`graph.output`, the same ValueInfo onnxruntime reports) and, from its registered contract, which
outputs are class scores, whether they are probabilities, and how many classes there are. No
initializer, node or attribute of the original is read, so nothing of its weights can reach the
stand-in: its numbers are drawn from a seed recorded in the twin's provenance.

The graph: the first numeric input, cast to float and flattened to (rows, width) (summed to one
column when its width is not fixed), times a random matrix plus a random bias gives each output's
logits; a float output is those logits (soft-maxed when the contract says probabilities), an integer
one their arg-max (a label), a ZipMap output the soft-maxed logits as one {label: score} map per row.
Outputs of other types (strings, sequences of tensors) cannot be made: the operator uploads a stand-in.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ML_OPSET = 3
IR_VERSION = 8
PRODUCER = "evalgate-stand-in"
FLOATS = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})
INTEGERS = frozenset(
    {
        TensorProto.INT64,
        TensorProto.INT32,
        TensorProto.INT16,
        TensorProto.INT8,
        TensorProto.UINT64,
        TensorProto.UINT32,
        TensorProto.UINT16,
        TensorProto.UINT8,
        TensorProto.BOOL,
    }
)


class StandInUnsupported(Exception):
    """The original's signature has something the service cannot make a stand-in for."""


def _type_text(t: onnx.TypeProto) -> str:
    """A type as text, symbolic dimensions by name: tensor(float)[batch,16], seq(map(int64,tensor(float)))."""
    which = t.WhichOneof("value")
    if which == "tensor_type":
        elem = helper.tensor_dtype_to_string(t.tensor_type.elem_type).removeprefix("TensorProto.").lower()
        if not t.tensor_type.HasField("shape"):
            return f"tensor({elem})"
        dims = [
            d.dim_param if d.HasField("dim_param") else str(d.dim_value) if d.HasField("dim_value") else "?"
            for d in t.tensor_type.shape.dim
        ]
        return f"tensor({elem})[{','.join(dims)}]"
    if which == "sequence_type":
        return f"seq({_type_text(t.sequence_type.elem_type)})"
    if which == "map_type":
        key = helper.tensor_dtype_to_string(t.map_type.key_type).removeprefix("TensorProto.").lower()
        return f"map({key},{_type_text(t.map_type.value_type)})"
    if which == "optional_type":
        return f"optional({_type_text(t.optional_type.elem_type)})"
    return str(which)


def _interface(path: Path) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """The graph's inputs (initializers listed as inputs are not inputs) and outputs."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises several error types for a file it cannot parse
        raise StandInUnsupported(f"the file is not an ONNX model onnx can read: {type(e).__name__}") from None
    initializers = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers], list(proto.graph.output)


def interface(path: Path) -> dict[str, list[dict[str, str]]]:
    """Every input and output by name and full type (symbolic dimensions included): what a stand-in
    must match exactly."""
    inputs, outputs = _interface(path)
    return {
        "inputs": [{"name": v.name, "type": _type_text(v.type)} for v in inputs],
        "outputs": [{"name": v.name, "type": _type_text(v.type)} for v in outputs],
    }


class _Graph:
    def __init__(self, rng: np.random.Generator):
        self.rng, self.nodes, self.initializers = rng, [], []  # type: ignore[var-annotated]
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"stand_in_{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, domain: str = "", **attrs: Any) -> str:
        out = out or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], domain=domain or None, **attrs))
        return out

    def weights(self, rows: int, cols: int) -> np.ndarray:
        return self.rng.normal(0, 1, size=(rows, cols)).astype(np.float32)


def _features(g: _Graph, inputs: list[onnx.ValueInfoProto]) -> tuple[str, int]:
    """(name, width) of a float (rows, width) tensor made from the first numeric input."""
    for v in inputs:
        t = v.type.tensor_type if v.type.HasField("tensor_type") else None
        if t is None or t.elem_type not in FLOATS | INTEGERS or not t.HasField("shape") or len(t.shape.dim) == 0:
            continue
        x = g.node("Cast", [v.name], to=TensorProto.FLOAT)
        dims = t.shape.dim
        if len(dims) == 1:
            return g.node("Unsqueeze", [x, g.const("axis", np.array([1], dtype=np.int64))]), 1
        flat = g.node("Flatten", [x], axis=1)
        widths = [d.dim_value for d in dims[1:]]
        if all(w > 0 for w in widths):
            return flat, int(np.prod(widths))
        summed = g.node("ReduceSum", [flat, g.const("axes", np.array([1], dtype=np.int64))], keepdims=1)
        return summed, 1
    return g.const("ones", np.ones((1, 1), dtype=np.float32)), 1


def _logits(g: _Graph, h: str, width: int, k: int) -> str:
    xw = g.node("MatMul", [h, g.const("w", g.weights(width, k))])
    return g.node("Add", [xw, g.const("b", g.weights(1, k)[0])])


def _trailing(t: onnx.TypeProto.Tensor) -> list[int]:
    return [d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim[1:]]


def _tensor_output(g: _Graph, v: onnx.ValueInfoProto, h: str, width: int, contract: dict[str, Any]) -> None:
    t = v.type.tensor_type
    if not t.HasField("shape") or len(t.shape.dim) == 0:
        raise StandInUnsupported(f"output {v.name!r} has no rank: a stand-in cannot know what shape to give it")
    trailing = _trailing(t)
    k = int(np.prod(trailing)) if trailing else 1
    shape = g.const("shape", np.array([-1, *trailing], dtype=np.int64))
    if t.elem_type in FLOATS:
        z = _logits(g, h, width, k)
        if v.name in contract.get("scores", []) and contract.get("output_kind") == "probabilities":
            z = g.node("Softmax", [z], axis=1)
        g.node("Cast", [g.node("Reshape", [z, shape])], v.name, to=t.elem_type)
    elif t.elem_type in INTEGERS:
        classes = int(contract.get("classes") or 2) if v.name in contract.get("labels", []) else 2
        label = g.node("ArgMax", [_logits(g, h, width, classes)], axis=1, keepdims=1)  # (rows, 1), int64
        if k > 1:
            label = g.node("Tile", [label, g.const("repeats", np.array([1, k], dtype=np.int64))])
        g.node("Cast", [g.node("Reshape", [label, shape])], v.name, to=t.elem_type)
    else:
        raise StandInUnsupported(f"output {v.name!r} is {_type_text(v.type)}: upload a stand-in for this model")


def _zipmap_output(g: _Graph, v: onnx.ValueInfoProto, h: str, width: int, contract: dict[str, Any]) -> None:
    m = v.type.sequence_type.elem_type.map_type
    value = m.value_type.tensor_type.elem_type if m.value_type.HasField("tensor_type") else None
    if value != TensorProto.FLOAT or m.key_type not in (TensorProto.INT64, TensorProto.STRING):
        raise StandInUnsupported(f"output {v.name!r} is {_type_text(v.type)}: upload a stand-in for this model")
    classes = int(contract.get("classes") or 2)
    p = g.node("Softmax", [_logits(g, h, width, classes)], axis=1)
    labels: dict[str, Any] = (
        {"classlabels_int64s": list(range(classes))}
        if m.key_type == TensorProto.INT64
        else {"classlabels_strings": [str(i) for i in range(classes)]}
    )
    g.node("ZipMap", [p], v.name, domain="ai.onnx.ml", **labels)


def build(original: Path, contract: dict[str, Any], seed: int) -> bytes:
    """The stand-in of the model at `original`, as ONNX bytes. Raises StandInUnsupported."""
    inputs, outputs = _interface(original)
    g = _Graph(np.random.default_rng(seed))
    h, width = _features(g, inputs)
    for v in outputs:
        which = v.type.WhichOneof("value")
        if which == "tensor_type":
            _tensor_output(g, v, h, width, contract)
        elif which == "sequence_type" and v.type.sequence_type.elem_type.HasField("map_type"):
            _zipmap_output(g, v, h, width, contract)
        else:
            raise StandInUnsupported(f"output {v.name!r} is {_type_text(v.type)}: upload a stand-in for this model")
    graph = helper.make_graph(g.nodes, "stand_in", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name=PRODUCER,
        doc_string=f"a stand-in with random weights (seed {seed}); nothing of the original's weights",
    )
    model.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise StandInUnsupported(f"the stand-in graph does not check: {e}") from None
    data: bytes = model.SerializeToString()
    return data


def check(original: Path, stand_in: Path, threads: int) -> dict[str, Any]:
    """That a stand-in has exactly the original's interface, loads in onnxruntime as the sidecar runs
    it, and runs on a probe of random rows; returns what registration learns of it (signature,
    contract) for comparison. Raises StandInUnsupported with what differs."""
    from service.inference.model_info import InvalidModel, describe_model

    if hashlib.sha256(original.read_bytes()).digest() == hashlib.sha256(stand_in.read_bytes()).digest():
        raise StandInUnsupported("the stand-in is the model itself: a stand-in must not hold its weights")
    want, got = interface(original), interface(stand_in)
    if want != got:
        raise StandInUnsupported(f"the stand-in's inputs and outputs differ from the model's: want {want}, got {got}")
    try:
        signature, contract, _ = describe_model(stand_in, threads)
    except InvalidModel as e:
        raise StandInUnsupported(str(e)) from None
    failed = [n for n in contract.notes if "did not run" in n]  # model_info's note for a failed probe
    if failed:
        raise StandInUnsupported(f"the stand-in loads but {failed[0]}")
    return {"signature": signature, "contract": contract.as_dict()}
