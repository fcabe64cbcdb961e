"""The model as the sidecar serves it: one onnxruntime session with the model version's fixed
configuration, its signature checked on every request, ZipMap outputs served as tensors, and the
operator's output policy applied to the class scores a job sees."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnxruntime as ort

from .contract import ErrorCode, ModelError, parse_output_policy
from .protocol import ORT_TO_NUMPY

# The one onnxruntime configuration a model version runs with, wherever it runs: fixed, not derived
# from the job's CPU limit, because a tree ensemble's sums (and so a tied row's label) depend on how
# its work is split between threads. Recorded in every release's provenance.
EXECUTION_MODE = "sequential"
GRAPH_OPTIMIZATION = "all"


def inference_config(threads: int) -> dict[str, Any]:
    """The configuration that Model(path, threads) runs with, as provenance records it."""
    return {
        "intra_op_threads": threads,
        "inter_op_threads": 1,
        "execution_mode": EXECUTION_MODE,
        "graph_optimization_level": GRAPH_OPTIMIZATION,
        "onnxruntime": ort.__version__,
    }


# ONNX types of the outputs a classifier exporter's ZipMap makes: one {class label: score} map per
# row. They are served as float32 (rows, classes), columns in the order of the labels.
ZIPMAP_TYPES = frozenset({"seq(map(int64,tensor(float)))", "seq(map(int64,tensor(double)))"})


class Model:
    def __init__(
        self,
        path: str,
        threads: int,
        output_policy: dict[str, Any] | None = None,
        score_outputs: Iterable[str] = (),
    ):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 4  # fatal only: a job's bad input must not write to the sidecar's log
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        # One run at a time, whatever the number of connections: the model's working memory is that
        # of one batch (and its threads are the model version's, not multiplied by connections).
        self._run_lock = threading.Lock()
        self.config = inference_config(threads)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self._dtypes = {
            i.name: np.dtype(ORT_TO_NUMPY[i.type]) if i.type in ORT_TO_NUMPY else None
            for i in self.session.get_inputs()
        }
        # Served: tensors of a dtype the protocol carries, and ZipMap outputs (as tensors). Others
        # (strings, maps with string keys) are not served at all.
        self.zipmaps = frozenset(o.name for o in self.session.get_outputs() if o.type in ZIPMAP_TYPES)
        self.output_names = [
            o.name for o in self.session.get_outputs() if o.type in ORT_TO_NUMPY or o.name in self.zipmaps
        ]
        # The operator's policy applies to the class-score outputs (those registration found).
        self.policy = parse_output_policy(output_policy or {"kind": "full"})
        self.scores = frozenset(score_outputs) & set(self.output_names)

    def metadata(self) -> dict[str, Any]:
        def io(args: Iterable[Any]) -> list[dict[str, Any]]:
            out = []
            for a in args:
                if a.name in self.scores and self.policy["kind"] == "labels":
                    out.append({"name": a.name, "dtype": "int64", "shape": [None]})
                elif a.name in self.zipmaps:
                    out.append({"name": a.name, "dtype": "float32", "shape": [None, None], "zipmap": True})
                elif a.type in ORT_TO_NUMPY:
                    shape = [d if isinstance(d, int) else None for d in a.shape]
                    out.append({"name": a.name, "dtype": ORT_TO_NUMPY[a.type], "shape": shape})
            return out

        meta = {"inputs": io(self.session.get_inputs()), "outputs": io(self.session.get_outputs())}
        return meta | ({"output_policy": self.policy} if self.scores else {})

    def served(self, requested: object) -> list[str]:
        """The outputs a request asks for (None: every served output), checked."""
        if requested is None:
            return self.output_names
        if not isinstance(requested, list) or not requested or not all(isinstance(n, str) for n in requested):
            raise ModelError(ErrorCode.BAD_FRAME, "outputs must be a non-empty list of output names")
        unknown = [n for n in requested if n not in self.output_names]
        if unknown or len(set(requested)) != len(requested):
            raise ModelError(ErrorCode.UNKNOWN_OUTPUT, f"outputs are {self.output_names}; asked for {requested}")
        return list(requested)

    def run(self, feeds: dict[str, np.ndarray], names: list[str] | None = None) -> list[np.ndarray]:
        names = names or self.output_names
        try:
            with self._run_lock:
                raw = self.session.run(names, feeds)
        except Exception:  # onnxruntime's own error types; the text may describe the graph
            raise ModelError(ErrorCode.INFERENCE_FAILED, "the model could not run on this input") from None
        arrays = [
            zipmap_array(o) if name in self.zipmaps else o if isinstance(o, np.ndarray) else np.asarray(o)
            for name, o in zip(names, raw, strict=True)
        ]
        return [self._limit(name, a) for name, a in zip(names, arrays, strict=True)]

    def _limit(self, name: str, scores: np.ndarray) -> np.ndarray:
        """A score output as the output policy lets a job see it."""
        kind = self.policy["kind"]
        if name not in self.scores or kind == "full" or scores.ndim != 2:
            return scores
        if kind == "labels":
            labels: np.ndarray = scores.argmax(axis=1).astype(np.int64)
            return labels
        if kind == "rounded":
            rounded: np.ndarray = np.round(scores, self.policy["digits"]).astype(scores.dtype)
            return rounded
        k = min(self.policy["k"], scores.shape[1])
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top = np.zeros_like(scores)
        np.put_along_axis(top, keep, np.take_along_axis(scores, keep, axis=1), axis=1)
        return top

    def run_batched(
        self,
        feeds: dict[str, np.ndarray],
        rows: int,
        batch: int,
        pace: Callable[[], None],
        max_bytes: int,
        names: list[str] | None = None,
        hold: Callable[[int], None] = lambda n: None,
    ) -> list[np.ndarray]:
        """Rows [0, rows) in batches of `batch`, each run on its own exactly as a predict of that
        batch would be; the outputs concatenated. Each batch after the first waits its turn under
        the request-rate limit (`pace`), as a request of its own would.

        The loop is here rather than in the client because a request crossing the socket costs
        about 0.1 ms of Python on each side, a tenth of the inference time of 256 rows of a small
        model (bench/inference_channel.py). So it is kept lean. `hold(n)` is told of each batch's
        output bytes as they pile up, and may refuse them (the sidecar's memory allowance)."""
        names = names or self.output_names
        parts: list[list[np.ndarray]] = [[] for _ in names]
        size = 0
        for i in range(0, max(rows, 1), batch):
            if i:
                pace()
            outs = self.run({k: v[i : i + batch] for k, v in feeds.items()}, names)
            hold(sum(out.nbytes for out in outs))
            for part, out in zip(parts, outs, strict=True):
                part.append(out)
                size += out.nbytes
            if size > max_bytes:
                raise ModelError(
                    ErrorCode.TOO_LARGE, f"the outputs of these rows pass {max_bytes} bytes; send fewer rows"
                )
        for name, part in zip(names, parts, strict=True):
            if part[0].ndim == 0:
                raise ModelError(ErrorCode.SHAPE_MISMATCH, f"output {name} is a scalar, not rows: use predict")
        if any(len(p) > 1 for p in parts):
            hold(size)  # the joined copy, while the parts still live
        return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]

    def only_input(self) -> tuple[str, np.dtype[Any]]:
        """The model's one input, for requests that name dataset rows (rows.py)."""
        if len(self.inputs) != 1:
            raise ModelError(ErrorCode.UNKNOWN_INPUT, "dataset rows by reference need a model with exactly one input")
        name = next(iter(self.inputs))
        dtype = self._dtypes[name]
        if dtype is None:
            raise ModelError(ErrorCode.DTYPE_MISMATCH, f"{name} takes a dtype the channel does not carry")
        return name, dtype

    def check(self, feeds: dict[str, np.ndarray]) -> int:
        """Validate feeds against the signature; return the batch (row) count."""
        if set(feeds) != set(self.inputs):
            unknown = sorted(set(feeds) - set(self.inputs))
            raise ModelError(
                ErrorCode.UNKNOWN_INPUT, f"inputs must be exactly {sorted(self.inputs)}; unknown {unknown}"
            )
        rows = None
        for name, arr in feeds.items():
            spec = self.inputs[name]
            if arr.dtype != self._dtypes[name]:
                raise ModelError(
                    ErrorCode.DTYPE_MISMATCH,
                    f"{name} wants {ORT_TO_NUMPY.get(spec.type, spec.type)}, got {arr.dtype.name}",
                )
            if len(arr.shape) != len(spec.shape) or any(
                isinstance(d, int) and d != a for d, a in zip(spec.shape, arr.shape, strict=True)
            ):
                raise ModelError(ErrorCode.SHAPE_MISMATCH, f"{name} wants shape {spec.shape}, got {list(arr.shape)}")
            n = arr.shape[0] if arr.shape else 1
            if rows is not None and n != rows:
                raise ModelError(ErrorCode.SHAPE_MISMATCH, "inputs disagree on the batch size")
            rows = n
        return rows or 0


def zipmap_array(rows: list[dict[int, float]]) -> np.ndarray:
    """[{label: score}, ...] as float32 (rows, classes), columns in the order of the labels."""
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    labels = sorted(rows[0])
    return np.array([[row[label] for label in labels] for row in rows], dtype=np.float32).reshape(len(rows), -1)
