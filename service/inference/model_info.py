"""What the registry may learn about an ONNX file: that it loads, its signature, and how a classifier's
outputs are to be read. Never weights.

The model is loaded exactly as the sidecar will run it (model.Model, the same onnxruntime
configuration) and run once on a probe of random rows, to tell:
- its one input's feature count;
- which outputs are labels (integers, one per row) and which are class scores (floats, one column
  per class; a ZipMap's maps are served as such a tensor), and how many classes;
- whether the scores are probabilities (every probe row in [0, 1], summing to 1) or logits.
The operator may say the last two instead (`classes`, `output_kind`), and must where the probe
cannot tell (an input of unknown width).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

OutputKind = Literal["probabilities", "logits"]
PROBE_ROWS = 64
PROBE_SEED = 20261127
PROBE_SUM_TOLERANCE = 1e-3


class InvalidModel(Exception):
    pass


@dataclass
class Contract:
    """How the built-in suites read this model; stored with the model version and shown."""

    input: str | None = None  # the one input a dataset's features feed
    input_dtype: str | None = None
    features: int | None = None  # its width, when fixed
    scores: list[str] = field(default_factory=list)  # float outputs of shape (rows, classes)
    labels: list[str] = field(default_factory=list)  # integer outputs, one label per row
    values: list[str] = field(default_factory=list)  # float outputs, one value per row (regressors)
    classes: int | None = None
    output_kind: OutputKind | None = None  # of the score outputs
    # Every number the model holds: initializer elements and node attributes (a tree ensemble's
    # thresholds and leaf values are attributes). What its lifetime budgets derive from.
    parameters: int = 0
    notes: list[str] = field(default_factory=list)  # why something could not be told

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_model(
    path: Path, threads: int, output_kind: OutputKind | None = None, classes: int | None = None
) -> tuple[dict[str, Any], Contract, dict[str, Any]]:
    """(signature, contract, inference configuration) of a model file. Raises InvalidModel."""
    from service.inference.model import Model

    try:
        model = Model(str(path), threads)
    except Exception as e:  # onnxruntime raises several private exception types
        raise InvalidModel(f"onnxruntime cannot load the model: {type(e).__name__}") from None
    signature = model.metadata()
    contract = _contract(model, signature)
    contract.parameters = count_parameters(path)
    if classes is not None:
        if contract.classes is not None and contract.classes != classes:
            raise InvalidModel(f"the model's scores have {contract.classes} classes, not {classes}")
        contract.classes = classes
    if output_kind is not None:
        if output_kind == "probabilities" and contract.output_kind == "logits":
            raise InvalidModel(
                "the model's scores are not probabilities on a probe of random rows (some rows leave [0, 1] or "
                "do not sum to 1): register it with output_kind=logits"
            )
        contract.output_kind = output_kind
    elif contract.scores and contract.output_kind is None:
        contract.notes.append("give output_kind (probabilities or logits): the probe could not tell")
    return signature, contract, model.config


def _contract(model: Any, signature: dict[str, Any]) -> Contract:
    c = Contract()
    inputs = signature["inputs"]
    if len(inputs) != 1 or len(inputs[0]["shape"]) != 2 or inputs[0]["dtype"] not in _NUMERIC:
        c.notes.append("the model needs exactly one 2-D numeric input to be fed a dataset's features")
        return c
    c.input, c.input_dtype = inputs[0]["name"], inputs[0]["dtype"]
    width = inputs[0]["shape"][1]
    if width is None:
        c.notes.append("the input's width is not fixed: give classes and output_kind, features are not checked")
        return c
    c.features = int(width)
    probe = np.random.default_rng(PROBE_SEED).normal(size=(PROBE_ROWS, c.features)).astype(c.input_dtype)
    try:
        outputs = dict(zip(model.output_names, model.run({c.input: probe}), strict=True))
    except Exception:
        c.notes.append("the model did not run on a probe of random rows of its input's shape")
        return c
    for name, out in outputs.items():
        if out.dtype.kind in "iu" and (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            c.labels.append(name)
        elif out.dtype.kind == "f" and out.ndim == 2 and out.shape[1] >= 2 and out.shape[0] == PROBE_ROWS:
            c.scores.append(name)
        elif out.dtype.kind == "f" and (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            c.values.append(name)
    widths = {outputs[name].shape[1] for name in c.scores}
    if len(widths) == 1:
        c.classes = int(widths.pop())
    elif len(widths) > 1:
        c.notes.append("score outputs disagree on the number of classes")
    if c.scores:
        looks = [_looks_like_probabilities(outputs[name]) for name in c.scores]
        c.output_kind = "probabilities" if all(looks) else "logits" if not any(looks) else None
    return c


def _looks_like_probabilities(scores: np.ndarray) -> bool:
    s = scores.astype(np.float64)
    return bool(
        s.min() >= -PROBE_SUM_TOLERANCE
        and s.max() <= 1 + PROBE_SUM_TOLERANCE
        and np.max(np.abs(s.sum(axis=1) - 1.0)) <= PROBE_SUM_TOLERANCE
    )


_NUMERIC = frozenset({"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8"})


def count_parameters(path: Path) -> int:
    """How many numbers the graph holds (its weights' count, never their values)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnxruntime loaded it; a graph onnx cannot parse counts as unknown
        return 0
    total = 0

    def graph_count(graph: Any) -> int:
        n = sum(int(np.prod(t.dims, dtype=np.int64)) for t in graph.initializer)
        for node in graph.node:
            for a in node.attribute:
                n += len(a.floats) + len(a.ints)
                if a.HasField("t"):
                    n += int(np.prod(a.t.dims, dtype=np.int64))
                for g in [*([a.g] if a.HasField("g") else []), *a.graphs]:
                    n += graph_count(g)
        return n

    total += graph_count(proto.graph)
    return total
