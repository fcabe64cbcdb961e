"""Trusted metrics: the same numbers as scikit-learn, and sensitivities that hold for any rows a
hostile job could write (the DP guarantee rests on them)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from service.release import gate, metrics
from service.release.metrics import Counts, Mean, Rows, RowsRejected, Total, Truth

RNG = np.random.default_rng(7)


def sample(n: int = 400, k: int = 3, seed: int = 1) -> tuple[Rows, Truth, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y] * rng.random((n, 1))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p32 = p.astype(np.float32)
    return Rows(probabilities=metrics.project_probabilities(p32, strict=True)), Truth(y=y, classes=k), p32


def exact(name: str, rows: Rows, truth: Truth) -> float:
    chosen = metrics.resolve(name, "classification", truth.classes)
    assert chosen is not None
    release = gate.release_rows(rows, truth, [chosen], epsilon=0.0, policy=gate.Policy(mechanism=None, decimals=8))
    return release.metrics[name]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_noise_free_values_equal_scikit_learn(k):
    rows, truth, p32 = sample(k=k, seed=k)
    y, pred = truth.y, p32.argmax(axis=1)
    expected = {
        "accuracy": sk.accuracy_score(y, pred),
        "balanced_accuracy": sk.balanced_accuracy_score(y, pred),
        "macro_precision": sk.precision_score(y, pred, average="macro", zero_division=0),
        "macro_recall": sk.recall_score(y, pred, average="macro", zero_division=0),
        "macro_f1": sk.f1_score(y, pred, average="macro", zero_division=0),
        "log_loss": sk.log_loss(y, p32, labels=list(range(k))),
        "misclassified": float(np.sum(pred != y)),
        "brier": float(np.mean(np.sum((p32.astype(np.float64) - np.eye(k)[y]) ** 2, axis=1))),
    }
    per_class_f1 = sk.f1_score(y, pred, average=None, zero_division=0)
    per_class_recall = sk.recall_score(y, pred, average=None, zero_division=0)
    cm = sk.confusion_matrix(y, pred, labels=list(range(k)))
    for c in range(k):
        expected[f"f1_class_{c}"] = per_class_f1[c]
        expected[f"recall_class_{c}"] = per_class_recall[c]
        for j in range(k):
            expected[f"confusion_{c}_{j}"] = float(cm[c, j])
    for name, value in expected.items():
        assert exact(name, rows, truth) == pytest.approx(value, abs=1e-6), name


def test_expected_calibration_error_and_binned_auc():
    rows, truth, p32 = sample(k=2, seed=11)
    conf, correct = p32.max(axis=1), (p32.argmax(axis=1) == truth.y)
    edges = np.linspace(0, 1, metrics.ECE_BINS + 1)
    ece = sum(
        abs(np.sum(correct[b] - conf[b])) / len(conf)
        for lo, hi in itertools.pairwise(edges)
        if (b := (conf > lo) & (conf <= hi)).any()
    )
    assert exact("ece", rows, truth) == pytest.approx(ece, abs=1e-6)
    # ROC AUC of scores binned to 20 bins: close to the exact AUC, exactly the AUC of the binned scores.
    binned = np.ceil(p32[:, 1].astype(np.float64) * metrics.AUC_BINS)
    assert exact("roc_auc", rows, truth) == pytest.approx(sk.roc_auc_score(truth.y, binned), abs=1e-9)
    assert abs(exact("roc_auc", rows, truth) - sk.roc_auc_score(truth.y, p32[:, 1])) < 0.02


def test_probabilities_declared_by_the_model_forgive_rounding_only():
    p = np.array([[0.5, 0.5000001], [-1e-7, 1.0]], dtype=np.float32)
    projected = metrics.project_probabilities(p, strict=True)
    assert np.allclose(projected.sum(axis=1), 1.0) and projected.min() >= 0
    with pytest.raises(RowsRejected, match="not probabilities"):
        metrics.project_probabilities(np.array([[2.0, -1.0]]), strict=True)
    with pytest.raises(RowsRejected):
        metrics.project_probabilities(np.array([[0.3, 0.3]]), strict=True)  # logits or garbage, not rounding


def test_a_jobs_own_rows_are_projected_whatever_they_hold():
    p = np.array([[5.0, -3.0, 0.0], [0.0, 0.0, 0.0], [1e30, 1e30, 1e30]])
    projected = metrics.project_probabilities(p, strict=False)
    assert np.allclose(projected.sum(axis=1), 1.0) and projected.min() >= 0 and projected.max() <= 1
    assert np.allclose(projected[1], 1 / 3)


@pytest.mark.parametrize(
    "arrays, why",
    [
        ({"probabilities": np.zeros((5, 3)), "label": np.zeros(5)}, "exactly one"),
        ({"weights": np.zeros(5)}, "exactly one"),
        ({"probabilities": np.zeros((4, 3))}, "shape"),
        ({"probabilities": np.full((5, 3), np.nan)}, "NaN"),
        ({"label": np.array(["a"] * 5)}, "numeric"),
        ({"label": np.full(5, np.inf)}, "NaN or infinite"),
    ],
)
def test_rows_that_break_the_contract_are_rejected(arrays, why):
    with pytest.raises(RowsRejected, match=why):
        metrics.read_rows(arrays, "classification", n=5, classes=3, strict=False)


def test_unknown_names_and_classes_out_of_range_resolve_to_nothing():
    assert metrics.resolve("weights", "classification", 3) is None
    assert metrics.resolve("f1_class_3", "classification", 3) is None
    assert metrics.resolve("confusion_0_9", "classification", 3) is None
    assert metrics.resolve("mae", "classification", 3) is None
    assert metrics.resolve("mae", "regression", 0, (0.0, 10.0)) is not None
    assert "log_loss" not in metrics.available("classification", 3, "labels")
    assert "log_loss" in metrics.available("classification", 3, "probabilities")


# -- sensitivities: replace any one row by any other, whatever the job wrote ----------------------------------

K = 3


def _rows(draw: st.DrawFn, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.array(draw(st.lists(st.integers(0, K - 1), min_size=n, max_size=n)))
    raw = np.array(draw(st.lists(st.floats(-5, 5), min_size=n * K, max_size=n * K))).reshape(n, K)
    return y, raw


@st.composite
def neighbours(draw: st.DrawFn) -> tuple[Truth, Rows, Truth, Rows]:
    n = draw(st.integers(2, 30))
    y, raw = _rows(draw, n)
    i = draw(st.integers(0, n - 1))
    y2, raw2 = y.copy(), raw.copy()
    y2[i] = draw(st.integers(0, K - 1))
    raw2[i] = np.array(draw(st.lists(st.floats(-5, 5), min_size=K, max_size=K)))
    as_rows = lambda r: Rows(probabilities=metrics.project_probabilities(r, strict=False))
    return Truth(y, K), as_rows(raw), Truth(y2, K), as_rows(raw2)


ALL = [*metrics.CLASSIFICATION, *(f"{p}_{c}" for p in metrics.PER_CLASS for c in range(K)), "confusion_1_2"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(neighbours(), st.sampled_from(ALL))
def test_one_row_moves_each_statistic_at_most_its_sensitivity(pair, name):
    t1, r1, t2, r2 = pair
    chosen = metrics.resolve(name, "classification", K)
    assert chosen is not None
    a, b = chosen.spec.compute(r1, t1, chosen.index), chosen.spec.compute(r2, t2, chosen.index)
    if isinstance(a, Counts):
        assert isinstance(b, Counts)
        diff = a.counts - b.counts
        assert np.sum(np.abs(diff)) <= a.l1 + 1e-9 and np.sqrt(np.sum(diff**2)) <= a.l2 + 1e-9
    elif isinstance(a, Mean):
        assert isinstance(b, Mean)
        assert abs(a.total - b.total) <= a.width + 1e-9 and abs(a.value - b.value) <= a.width / t1.n + 1e-9
    else:
        assert isinstance(a, Total) and isinstance(b, Total)
        assert abs(a.value - b.value) <= a.width + 1e-9


def test_noise_is_drawn_for_every_metric_and_disclosed():
    rows, truth, _ = sample(n=2000, k=3, seed=5)
    chosen = [metrics.resolve(n, "classification", 3) for n in ("accuracy", "macro_f1", "log_loss", "misclassified")]
    policy = gate.Policy(mechanism="laplace")
    out = gate.release_rows(rows, truth, [c for c in chosen if c], epsilon=0.5, policy=policy)
    assert set(out.noise) == {"accuracy", "macro_f1", "log_loss", "misclassified"}
    assert out.noise["accuracy"]["sensitivity"] == pytest.approx(1 / 2000) and out.noise["accuracy"]["on"] == "value"
    assert out.noise["macro_f1"]["sensitivity"] == 4.0 and out.noise["macro_f1"]["on"] == "counts"
    assert out.noise["log_loss"]["sensitivity"] == pytest.approx(metrics.LOG_LOSS_MAX / 2000)
    assert out.metrics["misclassified"] == int(out.metrics["misclassified"])
    bits = gate.rows_max_bits([c for c in chosen if c], 2000, 0.5, policy)
    assert 10 < bits < 80


def test_per_class_metrics_on_a_tiny_class_are_withheld():
    rng = np.random.default_rng(3)
    y = np.concatenate([np.zeros(500, dtype=int), np.ones(5, dtype=int)])
    p = rng.dirichlet([1, 1], size=len(y))
    rows, truth = Rows(probabilities=p), Truth(y, 2)
    chosen = [metrics.resolve(n, "classification", 2) for n in ("f1_class_1", "f1_class_0", "accuracy")]
    out = gate.release_rows(rows, truth, [c for c in chosen if c], epsilon=0.0, policy=gate.Policy(mechanism=None))
    assert [s["metric"] for s in out.suppressed] == ["f1_class_1"]
    assert set(out.metrics) == {"accuracy", "f1_class_0"}


def test_metrics_on_a_slice_are_those_of_its_rows():
    rows, truth, p32 = sample(n=600, k=3, seed=9)
    x = np.random.default_rng(9).normal(size=(600, 4))
    predicates = [{"feature": 2, "op": ">", "value": 0.0}, {"feature": 0, "op": "<=", "value": 1.0}]
    mask = metrics.slice_mask(x, predicates)
    assert 100 < mask.sum() < 400
    names = ["accuracy@pos", "macro_f1@pos", "misclassified@pos", "log_loss@pos"]
    chosen = [metrics.resolve(n, "classification", 3) for n in names]
    assert all(c is not None and c.slice == "pos" for c in chosen)
    policy = gate.Policy(mechanism=None, decimals=8)
    out = gate.release_rows(rows, truth, [c for c in chosen if c], epsilon=0.0, policy=policy, slices={"pos": mask})
    y, pred = truth.y[mask], p32[mask].argmax(axis=1)
    assert out.metrics["accuracy@pos"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-7)
    assert out.metrics["macro_f1@pos"] == pytest.approx(sk.f1_score(y, pred, average="macro"), abs=1e-7)
    assert out.metrics["misclassified@pos"] == float(np.sum(pred != y))
    assert out.metrics["log_loss@pos"] == pytest.approx(sk.log_loss(y, p32[mask], labels=[0, 1, 2]), abs=1e-6)


def test_a_slices_size_is_private_so_its_mean_is_a_ratio_of_noisy_sums():
    rows, truth, _ = sample(n=2000, k=3, seed=4)
    mask = np.zeros(2000, dtype=bool)
    mask[:700] = True
    chosen = metrics.resolve("accuracy@head", "classification", 3)
    assert chosen is not None
    out = gate.release_rows(rows, truth, [chosen], epsilon=1.0, policy=gate.Policy(), slices={"head": mask})
    noise = out.noise["accuracy@head"]
    assert noise["on"] == "slice total and count" and noise["epsilon"] == 1.0
    assert (
        noise["sensitivity"] == 1.0
        and noise["scale"] == pytest.approx(2.0)
        and noise["count_scale"] == pytest.approx(2.0)
    )
    tiny = np.zeros(2000, dtype=bool)
    tiny[:10] = True
    out = gate.release_rows(rows, truth, [chosen], epsilon=1.0, policy=gate.Policy(), slices={"head": tiny})
    assert out.suppressed == [{"metric": "accuracy@head", "reason": "computed on fewer than 50 rows"}]


def test_slice_names_and_nan_features():
    assert metrics.resolve("accuracy@Bad-Name", "classification", 3) is None
    assert metrics.resolve("weights@ok", "classification", 3) is None
    x = np.array([[np.nan], [1.0], [2.0]])
    assert metrics.slice_mask(x, [{"feature": 0, "op": "!=", "value": 5.0}]).tolist() == [False, True, True]
