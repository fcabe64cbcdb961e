"""A dataset's synthetic twin: the same schema, and of the real rows nothing but a few statistics
released with OpenDP noise (service.release.privacy, the release gate's own machinery).

Released, each with its own ε (sequential composition; the privacy unit is one row replaced by
another, as for released metrics), with the deployment's mechanism (Laplace, or Gaussian):
1. classification: the vector of per-class counts (L1 sensitivity 2, L2 √2): half the twin's ε;
2. for every feature (and a regression target): a histogram of its values over one fixed public grid
   of bins (EDGES: 0 and ±1, 2, 5 × 10^k), noised as a vector of counts (L1 sensitivity 2, L2 √2):
   the rest of the twin's ε, split evenly.
Public already, so free: the row count (the twin's is rounded to two significant digits), the number
of features, the dtypes and the number of classes (GET /v1/datasets shows them).

Everything after is post-processing, at no further privacy cost: each feature's range is read from
its noisy histogram (the q and 1 - q quantiles, as bin edges, of the bins that stand above the noise;
FALLBACK when none does), its values drawn uniformly and independently within that range; labels
come in the released class proportions (every class keeps at least one row), in a random order; all
of it from a recorded seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.release import privacy

COUNTS_SHARE = 0.5  # of a classification twin's ε, for its class counts
# The histogram's bin edges: public, fixed, whatever the data. Values below the first or above the
# last fall in the two open end bins, whose range ends at the first or last edge.
EDGES = np.array(sorted({0.0} | {s * m * 10.0**k for s in (1.0, -1.0) for m in (1, 2, 5) for k in range(-3, 6)}))

MISS = 0.001  # the chance that an empty bin's noise is read as rows, over a whole histogram (one read
# as rows far from the data stretches the range to its edge: 5 % made that a twin in six with four features)
# A feature whose histogram has no bin above the noise (too few rows for its ε) gets this range:
# public, fixed, no data in it. The provenance says which features did.
FALLBACK = (-1.0, 1.0)


@dataclass(frozen=True)
class Twin:
    x: np.ndarray
    y: np.ndarray
    released: dict[str, Any]  # exactly what was released to make it (its provenance)


def round_rows(n: int) -> int:
    """n to two significant digits (at least 1)."""
    if n < 100:
        return max(1, n)
    step = int(10 ** (len(str(n)) - 2))
    return max(step, int(n / step + 0.5) * step)


def _vector_noise(mechanism: str, epsilon: float, delta: float) -> privacy.Noise:
    """Noise for a vector of counts that one replaced row moves by 1 in two places."""
    sensitivity = 2.0 if mechanism == "laplace" else math.sqrt(2.0)
    return privacy.calibrate(
        mechanism, epsilon=epsilon, sensitivity=sensitivity, integer=False, delta=delta, vector=True
    )


def _threshold(noise: privacy.Noise, bins: int) -> float:
    tail = math.log(bins / MISS)
    return noise.scale * (tail if noise.mechanism == "laplace" else math.sqrt(2 * tail))


def _range(column: np.ndarray, quantile: float, noise: privacy.Noise, name: str) -> tuple[float, float, dict[str, Any]]:
    """A column's noisy histogram over EDGES, and the range read from it."""
    values = np.nan_to_num(column.astype(np.float64), nan=0.0)  # NaN counts as 0: a per-row map
    counts = np.bincount(np.searchsorted(EDGES, values, side="right"), minlength=len(EDGES) + 1)
    noisy = np.asarray(privacy.add_noise_vector([float(c) for c in counts], noise))
    # Only bins that stand above the noise count (an empty bin passes with probability < MISS in all),
    # else the noise of the many empty bins would be read as rows.
    kept = np.where(noisy >= _threshold(noise, len(noisy)), noisy, 0.0)
    total = float(kept.sum())
    if total <= 0:
        lo, hi = FALLBACK
    else:
        cdf = np.cumsum(kept) / total
        first = int(np.searchsorted(cdf, quantile, side="left"))  # bin i holds [EDGES[i-1], EDGES[i])
        last = int(np.searchsorted(cdf, 1 - quantile, side="left"))
        lo = float(EDGES[max(0, first - 1)])
        hi = float(EDGES[min(len(EDGES) - 1, last)])
    record = {
        "statistic": f"{name}.histogram",
        "range": [lo, max(lo, hi)],
        "fallback": total <= 0,
        "values": [round(float(v), 3) for v in noisy],
        **noise.as_dict(),
    }
    return lo, max(lo, hi), record


def _draw(rng: np.random.Generator, lo: float, hi: float, n: int, dtype: np.dtype[Any]) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        a, b = max(math.floor(lo), int(info.min)), min(math.floor(hi), int(info.max))
        return rng.integers(a, max(a, b) + 1, size=n).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=n).astype(dtype)
    return rng.uniform(lo, hi, size=n).astype(dtype)


def _allocate(noisy: list[float], rows: int) -> np.ndarray:
    """Rows per class in the noisy proportions, every class at least one, summing to `rows`."""
    k = len(noisy)
    share = np.clip(np.asarray(noisy, dtype=np.float64), 1.0, None)
    share /= share.sum()
    spare = max(0, rows - k)
    exact = share * spare
    counts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - counts), kind="stable")[: spare - int(counts.sum())]:
        counts[i] += 1
    return counts + 1


def make_twin(
    x: np.ndarray,
    y: np.ndarray,
    *,
    classes: int,
    epsilon: float,
    mechanism: str,
    delta: float,
    quantile: float,
    seed: int,
) -> Twin:
    """The twin of features x and targets y (classes 0 for regression) for `epsilon` in all."""
    rows = round_rows(len(y))
    rng = np.random.default_rng(seed)
    statistics: list[dict[str, Any]] = []
    ranged = x.shape[1] + (0 if classes else 1)
    counts_epsilon = epsilon * COUNTS_SHARE if classes else 0.0
    per_histogram = _vector_noise(mechanism, (epsilon - counts_epsilon) / ranged, delta)
    if classes:
        noise = _vector_noise(mechanism, counts_epsilon, delta)
        real = np.bincount(y.astype(np.int64), minlength=classes)[:classes]
        noisy = privacy.add_noise_vector([float(c) for c in real], noise)
        statistics.append({"statistic": "class_counts", "values": [round(v, 3) for v in noisy], **noise.as_dict()})
        twin_y = np.repeat(np.arange(classes), _allocate(noisy, rows)).astype(y.dtype)
        rng.shuffle(twin_y)
    else:
        lo, hi, found = _range(y, quantile, per_histogram, "target")
        statistics.append(found)
        twin_y = _draw(rng, lo, hi, rows, y.dtype)
    columns = []
    for j in range(x.shape[1]):
        lo, hi, found = _range(x[:, j], quantile, per_histogram, f"feature_{j}")
        statistics.append(found)
        columns.append(_draw(rng, lo, hi, rows, x.dtype))
    twin_x = np.stack(columns, axis=1) if columns else np.zeros((rows, 0), dtype=x.dtype)
    released = {
        "epsilon": epsilon,
        "statistics": statistics,
        "public": {
            "rows": rows,
            "rows_rounding": "two significant digits of the dataset's rows",
            "features": int(x.shape[1]),
            "x_dtype": x.dtype.name,
            "y_dtype": y.dtype.name,
            "classes": classes,
            "task": "classification" if classes else "regression",
        },
        "histogram_edges": [float(e) for e in EDGES],
        "post_processing": (
            f"each feature's range is its noisy histogram's {quantile:g} and {1 - quantile:g} quantiles "
            f"(bin edges) over the bins above the noise (else {FALLBACK}), its values drawn uniformly and "
            "independently within it; labels in the released class proportions (at least one row per class), "
            "shuffled; NaN counted as 0 in the histograms"
        ),
        "seed": seed,
        "seed_note": "the seed draws the rows from the released values; OpenDP's noise is not seeded",
    }
    return Twin(twin_x, twin_y, released)
