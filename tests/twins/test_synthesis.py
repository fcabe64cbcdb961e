"""A dataset's twin: the same schema, noised statistics, none of the real rows."""

from __future__ import annotations

import numpy as np
import pytest

from service.demo_assets import make_blobs
from service.registry import datasets
from service.twins import synthesis


def twin_of(x: np.ndarray, y: np.ndarray, classes: int, epsilon: float = 1.0, seed: int = 1) -> synthesis.Twin:
    return synthesis.make_twin(
        x, y, classes=classes, epsilon=epsilon, mechanism="laplace", delta=0.0, quantile=0.01, seed=seed
    )


def test_the_twin_has_the_schema_and_passes_registration_checks(tmp_path):
    x, y, _ = make_blobs(n=1234, features=3, seed=4)
    twin = twin_of(x, y, classes=3)
    path = tmp_path / "twin.npz"
    np.savez(path, x=twin.x, y=twin.y)
    found = datasets.inspect_dataset(path, min_rows=1, allow_nan=False)
    assert (found.rows, found.features, found.features_dtype, found.classes, found.task) == (
        1200,  # 1234 to two significant digits
        3,
        "float32",
        3,
        "classification",
    )
    assert twin.y.dtype == y.dtype


def test_the_twin_holds_none_of_the_real_rows_and_its_counts_are_noised():
    x, y, _ = make_blobs(n=3000, features=2, seed=5)
    twins = [twin_of(x, y, classes=3, seed=s) for s in range(3)]
    real = {tuple(r) for r in x.tolist()}
    for twin in twins:
        assert not real & {tuple(r) for r in twin.x.tolist()}
        assert not set(x[:, 0].tolist()) & set(twin.x[:, 0].tolist())
    released = [twin.released["statistics"][0] for twin in twins]
    assert all(r["statistic"] == "class_counts" and r["mechanism"] == "laplace" for r in released)
    exact = np.bincount(y).tolist()
    # Each draw is noised (continuous noise never lands on the exact counts), and draws differ.
    assert all(r["values"] != exact for r in released)
    assert len({tuple(r["values"]) for r in released}) == 3


def test_the_released_statistics_add_up_to_the_twins_epsilon_and_say_everything():
    x, y, _ = make_blobs(n=2000, features=4, seed=6)
    twin = twin_of(x, y, classes=3, epsilon=2.0)
    stats = twin.released["statistics"]
    assert [s["statistic"] for s in stats] == ["class_counts", *[f"feature_{j}.histogram" for j in range(4)]]
    assert sum(s["epsilon"] for s in stats) == pytest.approx(2.0)
    assert stats[0]["epsilon"] == pytest.approx(1.0) and stats[1]["epsilon"] == pytest.approx(0.25)
    assert twin.released["seed"] == 1 and twin.released["public"]["rows"] == 2000
    # Ranges come from the histograms: on 2000 rows with ε 0.25 each, the blobs' span (about ±4) is found.
    # An empty bin's noise is read as rows with probability MISS (0.1 %) per histogram, which stretches
    # that feature's range to an edge: seen once in CI, never in 2000 twins run alone. Two of four at
    # once would be a bug (about 6 in a million by chance).
    found = 0
    for j, s in enumerate(stats[1:]):
        lo, hi = s["range"]
        assert not s["fallback"] and lo < np.median(x[:, j]) < hi
        found += hi - lo <= 20
        assert twin.x[:, j].min() >= lo and twin.x[:, j].max() <= hi
    assert found >= 3, stats


def test_a_regression_twin_has_float_targets_in_a_released_range():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, size=(2000, 2)).astype(np.int32)
    y = (x[:, 0] * 0.5 + rng.normal(size=2000)).astype(np.float64)
    twin = twin_of(x, y, classes=0)
    assert twin.x.dtype == np.int32 and twin.y.dtype == np.float64 and len(twin.y) == 2000
    assert [s["statistic"] for s in twin.released["statistics"]] == [
        "target.histogram",
        "feature_0.histogram",
        "feature_1.histogram",
    ]
    assert sum(s["epsilon"] for s in twin.released["statistics"]) == pytest.approx(1.0)


def test_rows_round_to_two_significant_digits():
    assert [synthesis.round_rows(n) for n in (7, 100, 149, 1234, 98765)] == [7, 100, 150, 1200, 99000]
