"""What registration checks in a dataset file, and the features-only copy rows-mode jobs are given.

A dataset is an `.npz` (no pickles) with features `x` (rows, features) and targets `y` (rows,):
integer class labels 0..k-1 (classification), or floats (regression).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.registry import errors, storage


@dataclass
class Inspected:
    rows: int
    features: int
    classes: int  # 0 for regression
    task: str
    features_dtype: str
    class_counts: list[int] | None
    warnings: list[str] = field(default_factory=list)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != {"x", "y"}:
                raise errors.InvalidDataset("dataset .npz must hold exactly the arrays x and y")
            return npz["x"], npz["y"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise errors.InvalidDataset(f"dataset is not a readable .npz without pickles: {type(e).__name__}") from None


def inspect_dataset(path: Path, *, min_rows: int, allow_nan: bool) -> Inspected:
    x, y = _load(path)
    if x.ndim != 2 or x.dtype.kind not in "fiu" or x.shape[1] == 0:
        raise errors.InvalidDataset("x must be a 2-D numeric array with at least one feature")
    if y.ndim != 1 or y.dtype.kind not in "fiu" or len(y) != len(x):
        raise errors.InvalidDataset("y must be a 1-D numeric array with one target per row of x")
    n = len(y)
    if n < min_rows:
        raise errors.DatasetTooSmall(f"the dataset has {n} rows; the smallest allowed is {min_rows}")
    warnings = []
    if x.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            if not allow_nan:
                raise errors.DatasetHasNan(
                    f"x holds {bad} NaN or infinite values in {int(np.any(~np.isfinite(x), axis=1).sum())} rows",
                    alternatives=["clean the features", "register with allow_nan=true to accept them as they are"],
                )
            warnings.append(f"accepted with {bad} NaN or infinite feature values (allow_nan)")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise errors.InvalidDataset("y (regression targets) holds NaN or infinite values")
        return Inspected(n, int(x.shape[1]), 0, "regression", x.dtype.name, None, warnings)
    if y.min() < 0:
        raise errors.InvalidDataset(f"labels must be 0..k-1; y holds {int(y.min())}")
    counts = np.bincount(y.astype(np.int64))
    empty = [int(c) for c in np.flatnonzero(counts == 0)]
    if empty:
        raise errors.DatasetEmptyClass(
            f"labels must be 0..k-1 with every class present; classes {empty[:10]} of 0..{len(counts) - 1} have no rows"
        )
    return Inspected(
        n, int(x.shape[1]), len(counts), "classification", x.dtype.name, [int(c) for c in counts], warnings
    )


def store_features(data_dir: Path, dataset_path: Path) -> str:
    """The features alone as an `.npz` blob (x only, no labels); returns its sha256."""
    x, _ = _load(dataset_path)
    buf = io.BytesIO()
    np.savez(buf, x=x)
    buf.seek(0)
    sha, _, _ = storage.store_stream(data_dir, buf, max_bytes=1 << 40, too_large=errors.DatasetTooLarge)
    return sha


def labels(dataset_path: Path) -> np.ndarray:
    """The targets, for trusted code only (the worker's metric computation)."""
    return _load(dataset_path)[1]


def features(dataset_path: Path) -> np.ndarray:
    """The features, for trusted code only (slices' predicates)."""
    return _load(dataset_path)[0]
