"""What the registry may learn about an ONNX file: that it loads, and its signature. Never weights."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


class InvalidModel(Exception):
    pass


def describe_model(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several private exception types
        raise InvalidModel(f"onnxruntime cannot load the model: {type(e).__name__}") from None

    def io(args: Iterable[Any]) -> list[dict[str, Any]]:
        return [
            {"name": a.name, "dtype": a.type, "shape": [d if isinstance(d, int) else None for d in a.shape]}
            for a in args
        ]

    return {"inputs": io(sess.get_inputs()), "outputs": io(sess.get_outputs())}
