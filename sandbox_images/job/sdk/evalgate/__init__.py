"""The evalgate SDK for evaluation code running inside the job sandbox.

    import evalgate
    x, y = evalgate.load_dataset()
    probs = evalgate.predict(x[:256])
    evalgate.report({"accuracy": 0.93})

The model is reachable only through predict(); it never appears as a file. Only the numbers given
to report() can leave, and only after the release gate has checked them.
"""

from __future__ import annotations

import json
import os

import numpy as np

from evalgate_inference import rows
from evalgate_inference.client import Client
from evalgate_inference.contract import (
    DATASET_PATH,
    RESULT_PATH,
    ROWS_NAME,
    SOCKET_PATH,
    BudgetExceeded,
    Env,
    ModelError,
)

__all__ = [
    "BudgetExceeded",
    "ModelError",
    "load_dataset",
    "load_features",
    "metric",
    "model_info",
    "model_output",
    "predict",
    "predict_all",
    "report",
    "report_rows",
    "requested_metrics",
    "seed",
]

_client: Client | None = None


def _conn() -> Client:
    global _client
    if _client is None:
        _client = Client(os.environ.get(Env.SOCKET, SOCKET_PATH))
    return _client


def load_features() -> np.ndarray:
    """The dataset's features x (n, d), read-only. Predicting on x, a slice of it or rows of it
    picked by an index (`x[idx]`, `x[mask]`) names the rows instead of sending them: the sidecar
    has the dataset too. To change the rows, copy them first (`x.copy()`); a copy goes by value."""
    return rows.load(os.environ.get(Env.DATASET, DATASET_PATH))


def load_dataset() -> tuple[np.ndarray, np.ndarray]:
    """Features x (n, d) and targets y (n,), for suites that report their own metrics. A rows-mode
    suite is not given the labels (the service computes its metrics): use load_features()."""
    path = os.environ.get(Env.DATASET, DATASET_PATH)
    with np.load(path, allow_pickle=False) as npz:
        if "y" not in npz.files:
            raise RuntimeError("this suite runs in rows mode: its code is not given the labels; use load_features()")
        y = npz["y"]
    return load_features(), y


def seed() -> int:
    return int(os.environ.get(Env.SEED, "0"))


def requested_metrics() -> list[str]:
    return [m for m in os.environ.get(Env.METRICS, "").split(",") if m]


def model_info() -> dict:
    """Input and output names, dtypes and shapes."""
    return _conn().metadata()


def predict_all(
    inputs, batch_size: int | None = None, inflight: int = 2, outputs: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Every output of the model, by name, for the given inputs: an array (for a one-input model)
    or a dict of arrays by input name, cast to the dtypes the model declares.

    The sidecar runs the rows in batches of `batch_size` (by default the largest it takes), each
    exactly as a request of its own would run. Rows of the dataset from load_features() (x, a
    slice, or rows picked by an index or a mask) are named, not sent: a range is one request
    however long. Other inputs go in requests of a few MB with `inflight` of them queued at the
    sidecar, so it never waits for the next. The budget counts rows, and one request per batch, as
    if each batch were sent alone."""
    client = _conn()
    info = model_info_cached()
    batch = int(batch_size or client.max_batch)
    if batch < 1:  # refused here: the sidecar counts frames the SDK never sends as abuse of the channel
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    named = rows.reference(inputs)
    if named is not None and len(info["inputs"]) == 1:  # rows of the dataset: name them, send nothing
        want = np.dtype(info["inputs"][0]["dtype"])
        copied = 0 if inputs.dtype == want else int(np.prod(inputs.shape[1:])) * want.itemsize
        return client.predict_rows(named, batch, depth=inflight, outputs=outputs, copied_row_bytes=copied)
    feeds = _feeds(inputs, info)
    return client.predict_batched(feeds, batch, depth=inflight, outputs=outputs)


def predict(inputs, batch_size: int | None = None, inflight: int = 2, output: str | None = None) -> np.ndarray:
    """One output of the model (`output` by name, else the first) for the given inputs; batched as
    predict_all() says."""
    info = model_info_cached()
    name = output or info["outputs"][0]["name"]
    if name not in {o["name"] for o in info["outputs"]}:
        raise ValueError(f"the model has no output {name!r}; it has {[o['name'] for o in info['outputs']]}")
    return predict_all(inputs, batch_size, inflight, outputs=[name])[name]


def _feeds(inputs, info: dict) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict):
        if len(info["inputs"]) != 1:
            raise ValueError("this model has several inputs: pass a dict of arrays by input name")
        inputs = {info["inputs"][0]["name"]: inputs}
    dtypes = {i["name"]: i["dtype"] for i in info["inputs"]}
    return {k: np.ascontiguousarray(v, dtype=dtypes.get(k)) for k, v in inputs.items()}


_info: dict | None = None


def model_info_cached() -> dict:
    global _info
    if _info is None:
        _info = model_info()
    return _info


def metric(value: float, n: int | None = None, min_class_n: int | None = None) -> dict:
    """A value with the rows it was computed on (when fewer than the dataset's) and the rows of the
    smallest class (for per-class metrics). The gate withholds values computed on too few rows."""
    entry: dict = {"value": float(value)}
    if n is not None:
        entry["n"] = int(n)
    if min_class_n is not None:
        entry["min_class_n"] = int(min_class_n)
    return entry


def _entry(v):
    if isinstance(v, dict):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    return float(v)


def report(metrics: dict) -> None:
    """Write the job's result: the requested metrics only (others given here are dropped). A value
    is a number, or metric(value, n=..., min_class_n=...)."""
    wanted = requested_metrics()
    chosen = {k: _entry(v) for k, v in metrics.items() if not wanted or k in wanted}
    path = os.environ.get(Env.OUTPUT, RESULT_PATH)
    # 0o640: the sidecar (by the output volume's group) copies it for the worker.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    with os.fdopen(fd, "w") as f:
        json.dump(chosen, f, sort_keys=True)


def model_output() -> tuple[str, str]:
    """Rows mode: the model output the job is to read, and what it gives (probabilities, logits,
    labels or values), as fixed at submission."""
    return os.environ[Env.MODEL_OUTPUT], os.environ[Env.OUTPUT_ROLE]


def report_rows(*, probabilities=None, label=None, value=None) -> None:
    """Rows mode: write one output row per dataset row, in the dataset's order. Exactly one of
    probabilities (n, classes), label (n,) or value (n,). The service computes the metrics from
    these and the labels, after projecting each row into what it declares (probabilities onto the
    simplex, labels into 0..k-1, values into the suite's range)."""
    given = {k: v for k, v in (("probabilities", probabilities), ("label", label), ("value", value)) if v is not None}
    if len(given) != 1:
        raise ValueError("report_rows takes exactly one of probabilities, label or value")
    ((name, array),) = given.items()
    path = os.environ.get(Env.OUTPUT, RESULT_PATH).rsplit("/", 1)[0] + "/" + ROWS_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)  # as report()
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **{name: np.ascontiguousarray(array)})
