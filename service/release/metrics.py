"""Trusted metrics: computed by the service from a job's per-row outputs and the dataset's labels,
which partner code never sees.

A job in rows mode writes one output row per dataset row: class probabilities (rows, classes), a
predicted label, or a predicted value. The rows are hostile until checked, so each row is first
projected into its declared set (probabilities onto the simplex, labels into 0..k-1, values into
their range): whatever the job wrote, one dataset row can then move each statistic below by a known
amount, and that is the sensitivity the noise is calibrated to (privacy unit: one row replaced by
another; the number of rows n is public).

Each metric is one of two shapes:
- a *mean* over all n rows of a bounded per-row contribution (accuracy, log loss, Brier score,
  expected calibration error, mean absolute and squared error): released as the exact value plus
  noise scaled to (contribution range) / n;
- a *ratio* of counts whose denominators are private (precision, recall and F1 per class and
  macro, balanced accuracy, ROC AUC from score histograms, confusion counts): the vector of counts
  gets noise scaled to its L1 (or L2) sensitivity, and the metric is computed from the noisy counts
  (post-processing: no further privacy cost).

Everything here is a pure function of numpy arrays; noise is drawn by OpenDP (release.privacy).
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.release.catalogue import MetricDecl

RowsKind = Literal["classification", "regression"]
# Below this a probability counts as this, so a row's log loss is at most -ln(EPS): numpy's float32
# epsilon, as scikit-learn clips a model's float32 probabilities.
PROB_EPS = float(np.finfo(np.float32).eps)
LOG_LOSS_MAX = -math.log(PROB_EPS)
ECE_BINS = 10
AUC_BINS = 20
# A model's declared probabilities may be off by float rounding, no more.
PROB_TOLERANCE = 1e-5


class RowsRejected(Exception):
    """The per-row output broke its contract. `reason` is for operators only."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Truth:
    """What the service knows of the dataset: labels (int classes, or float targets), k, n."""

    y: np.ndarray
    classes: int  # 0 for regression

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Rows:
    """A job's per-row output after projection: probabilities (n, k), or labels (n,), or values (n,)."""

    probabilities: np.ndarray | None = None
    labels: np.ndarray | None = None
    values: np.ndarray | None = None

    def predicted(self) -> np.ndarray:
        if self.labels is not None:
            return self.labels
        assert self.probabilities is not None
        predicted: np.ndarray = self.probabilities.argmax(axis=1)
        return predicted


# -- the statistics ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mean:
    """A total over the rows divided by their number: replacing one row moves the total by at most
    `width`, so the mean over n (public) rows by at most width / n. Over a slice, whose number of rows
    is private, the total and the count are noised apart and the mean is their ratio."""

    total: float
    n: int
    width: float

    @property
    def value(self) -> float:
        return self.total / self.n if self.n else 0.0


@dataclass(frozen=True)
class Total:
    """Σ contribution_i with each contribution in [0, width] (a count when width is 1): sensitivity width."""

    value: float
    width: float


@dataclass(frozen=True)
class Counts:
    """A vector of counts; replacing one row moves it by at most l1 (L1 norm) and l2 (L2 norm).
    `finish` turns the (noisy) counts into the metric; `support`, into the rows of the smallest class
    the metric is about (a per-class metric on too small a class is withheld)."""

    counts: np.ndarray
    l1: float
    l2: float
    finish: Callable[[np.ndarray], float]
    support: Callable[[np.ndarray], float] | None = None


Statistic = Mean | Total | Counts


Shape = Literal["mean", "total", "counts"]


@dataclass(frozen=True)
class Spec:
    """One metric of the catalogue: what it needs, how it is released, how it is computed."""

    name: str
    rows: RowsKind
    needs: Literal["labels", "probabilities", "values"]  # the least a row must carry
    decl: MetricDecl  # its kind and range: the grid it is released on and the bits it can carry
    compute: Callable[[Rows, Truth, int], Statistic]  # (rows, truth, class) -> statistic
    shape: Shape  # which Statistic compute returns
    width: float = 1.0  # for a mean or a total: the range of one row's contribution

    @property
    def needs_counts(self) -> bool:
        return self.shape == "counts"


def _confusion(rows: Rows, truth: Truth) -> np.ndarray:
    k = truth.classes
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (truth.y.astype(np.int64), rows.predicted().astype(np.int64)), 1.0)
    return cm


def _tp_fp_fn(rows: Rows, truth: Truth) -> np.ndarray:
    """(TP_c, FP_c, FN_c) for every class c, flattened. A row adds 1 to TP of its class, or 1 to FN
    of its true class and 1 to FP of its predicted class: replacing it moves at most four counts
    by one (L1 4, L2 2)."""
    cm = _confusion(rows, truth)
    tp = np.diag(cm)
    return np.concatenate([tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp])


def _prf(counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 per class from (possibly noisy) TP, FP, FN; 0 where undefined, as
    scikit-learn's zero_division=0."""
    tp, fp, fn = (np.clip(counts[i * k : (i + 1) * k], 0.0, None) for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return precision, recall, f1


def _ratio_counts(rows: Rows, truth: Truth, pick: Callable[[np.ndarray, np.ndarray, np.ndarray], float]) -> Counts:
    """A macro metric of per-class precision, recall and F1, from every class's counts."""
    k = truth.classes
    return Counts(
        _tp_fp_fn(rows, truth),
        l1=4.0,
        l2=2.0,
        finish=lambda c: pick(*_prf(c, k)),
        support=lambda c: float(np.min(c[:k] + c[2 * k :])),  # rows of the smallest class: TP + FN
    )


def _accuracy(rows: Rows, truth: Truth, _: int) -> Statistic:
    return Mean(float(np.sum(rows.predicted() == truth.y)), truth.n, 1.0)


def _misclassified(rows: Rows, truth: Truth, _: int) -> Statistic:
    return Total(float(np.sum(rows.predicted() != truth.y)), 1.0)


def _balanced_accuracy(rows: Rows, truth: Truth, _: int) -> Statistic:
    """Mean recall over classes, from (TP_c, rows of class c): a row moves at most two TP and two
    class counts by one (L1 4, L2 2)."""
    k = truth.classes
    cm = _confusion(rows, truth)

    def finish(c: np.ndarray) -> float:
        tp, total = np.clip(c[:k], 0.0, None), np.clip(c[k:], 0.0, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(total > 0, np.minimum(tp / total, 1.0), 0.0)
        return float(np.mean(recall))

    return Counts(
        np.concatenate([np.diag(cm), cm.sum(axis=1)]),
        l1=4.0,
        l2=2.0,
        finish=finish,
        support=lambda c: float(np.min(c[k:])),
    )


def _log_loss(rows: Rows, truth: Truth, _: int) -> Statistic:
    assert rows.probabilities is not None
    p = np.clip(rows.probabilities[np.arange(truth.n), truth.y.astype(np.int64)], PROB_EPS, 1.0)
    return Mean(float(np.sum(-np.log(p))), truth.n, LOG_LOSS_MAX)


def _brier(rows: Rows, truth: Truth, _: int) -> Statistic:
    """Multiclass Brier score: Σ_c (p_c - [y = c])² per row, in [0, 2]."""
    assert rows.probabilities is not None
    onehot = np.eye(truth.classes)[truth.y.astype(np.int64)]
    return Mean(float(np.sum((rows.probabilities - onehot) ** 2)), truth.n, 2.0)


def _ece(rows: Rows, truth: Truth, _: int) -> Statistic:
    """Expected calibration error over ECE_BINS equal-width bins of the top probability:
    Σ_b |Σ_{i in b} (correct_i - confidence_i)| / n. A row sits in one bin and moves that bin's sum
    by at most 1, so replacing it moves the total by at most 2/n."""
    assert rows.probabilities is not None
    conf = rows.probabilities.max(axis=1)
    correct = (rows.probabilities.argmax(axis=1) == truth.y).astype(np.float64)
    bins = np.clip(np.ceil(conf * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    gaps = np.zeros(ECE_BINS)
    np.add.at(gaps, bins, correct - conf)
    return Mean(float(np.sum(np.abs(gaps))), truth.n, 2.0)


def _auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties within a bin counting half."""
    pos, neg = np.clip(pos, 0.0, None), np.clip(neg, 0.0, None)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos <= 0 or n_neg <= 0:
        return 0.5
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float(min(1.0, max(0.0, (np.sum(pos * below) + 0.5 * np.sum(pos * neg)) / (n_pos * n_neg))))


def _roc_auc(rows: Rows, truth: Truth, _: int) -> Statistic:
    """ROC AUC of binned scores (AUC_BINS equal-width bins): binary, the positive class's score;
    several classes, the mean of one-vs-rest AUCs. Each row adds one to one bin of each class's
    histogram pair: replacing it moves 2 counts per histogram pair (L1 2·pairs, L2 √(2·pairs))."""
    assert rows.probabilities is not None
    k = truth.classes
    classes = [1] if k == 2 else list(range(k))
    hists = []
    for c in classes:
        bins = np.clip(np.ceil(rows.probabilities[:, c] * AUC_BINS).astype(np.int64) - 1, 0, AUC_BINS - 1)
        is_c = truth.y == c
        hists.append(np.bincount(bins[is_c], minlength=AUC_BINS))
        hists.append(np.bincount(bins[~is_c], minlength=AUC_BINS))
    m = len(classes)

    def finish(c: np.ndarray) -> float:
        parts = c.reshape(m, 2, AUC_BINS)
        return float(np.mean([_auc_from_histograms(p[0], p[1]) for p in parts]))

    return Counts(np.concatenate(hists).astype(np.float64), l1=2.0 * m, l2=math.sqrt(2.0 * m), finish=finish)


def _class_metric(which: int) -> Callable[[Rows, Truth, int], Statistic]:
    """Precision, recall or F1 of one class c, from (TP_c, FP_c, FN_c): a row adds one to at most one
    of them, so replacing it moves at most two by one (L1 2, L2 √2)."""

    def compute(rows: Rows, truth: Truth, c: int) -> Statistic:
        k = truth.classes
        counts = _tp_fp_fn(rows, truth)[[c, k + c, 2 * k + c]]
        return Counts(
            counts,
            l1=2.0,
            l2=math.sqrt(2.0),
            finish=lambda v: float(_prf(v, 1)[which][0]),
            support=lambda v: float(v[0] + v[2]),
        )

    return compute


def _macro(which: int) -> Callable[[Rows, Truth, int], Statistic]:
    def compute(rows: Rows, truth: Truth, _: int) -> Statistic:
        return _ratio_counts(rows, truth, lambda *prf: float(np.mean(prf[which])))

    return compute


def _confusion_cell(rows: Rows, truth: Truth, cell: int) -> Statistic:
    # One cell of the confusion matrix: a count (replacing a row moves it by at most 1).
    i, j = divmod(cell, truth.classes)
    return Total(float(_confusion(rows, truth)[i, j]), 1.0)


PROPORTION = MetricDecl(kind="proportion")
COUNT = MetricDecl(kind="count")

CLASSIFICATION: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("accuracy", "classification", "labels", PROPORTION, _accuracy, "mean"),
        Spec("misclassified", "classification", "labels", COUNT, _misclassified, "total"),
        Spec("balanced_accuracy", "classification", "labels", PROPORTION, _balanced_accuracy, "counts"),
        Spec("macro_precision", "classification", "labels", PROPORTION, _macro(0), "counts"),
        Spec("macro_recall", "classification", "labels", PROPORTION, _macro(1), "counts"),
        Spec("macro_f1", "classification", "labels", PROPORTION, _macro(2), "counts"),
        Spec(
            "log_loss",
            "classification",
            "probabilities",
            MetricDecl(kind="nonnegative", max=16.0),
            _log_loss,
            "mean",
            LOG_LOSS_MAX,
        ),
        Spec("brier", "classification", "probabilities", MetricDecl(kind="nonnegative", max=2.0), _brier, "mean", 2.0),
        Spec("ece", "classification", "probabilities", PROPORTION, _ece, "mean", 2.0),
        Spec("roc_auc", "classification", "probabilities", PROPORTION, _roc_auc, "counts"),
    )
}
# Per class c (0..k-1): precision_class_<c>, recall_class_<c>, f1_class_<c>; confusion_<i>_<j>.
PER_CLASS = {
    p: Spec(p, "classification", "labels", PROPORTION, _class_metric(i), "counts")
    for i, p in enumerate(("precision_class", "recall_class", "f1_class"))
}
CONFUSION = Spec("confusion", "classification", "labels", COUNT, _confusion_cell, "total")
_PER_CLASS_RE = re.compile(r"^(precision_class|recall_class|f1_class)_(\d{1,4})$")
_CONFUSION_RE = re.compile(r"^confusion_(\d{1,4})_(\d{1,4})$")


def regression_specs(lo: float, hi: float) -> dict[str, Spec]:
    """MAE and MSE of predictions in [lo, hi]: a row's error is counted up to hi - lo (its square up
    to (hi - lo)²), so one row moves the mean by at most that over n."""
    width = hi - lo

    def mae(rows: Rows, truth: Truth, _: int) -> Statistic:
        assert rows.values is not None
        return Mean(float(np.sum(np.minimum(np.abs(rows.values - truth.y), width))), truth.n, width)

    def mse(rows: Rows, truth: Truth, _: int) -> Statistic:
        assert rows.values is not None
        return Mean(float(np.sum(np.minimum((rows.values - truth.y) ** 2, width**2))), truth.n, width**2)

    return {
        "mae": Spec("mae", "regression", "values", MetricDecl(kind="nonnegative", max=width), mae, "mean", width),
        "mse": Spec("mse", "regression", "values", MetricDecl(kind="nonnegative", max=width**2), mse, "mean", width**2),
    }


@dataclass(frozen=True)
class Chosen:
    """A requested metric resolved against the catalogue: its spec, which class (or cell) it is about,
    and the slice of rows it is computed on (None: all of them)."""

    name: str
    spec: Spec
    index: int = 0
    slice: str | None = None


def resolve(name: str, rows: RowsKind, classes: int, value_range: tuple[float, float] | None = None) -> Chosen | None:
    """The catalogue's metric of that name for these rows, or None if there is none. `metric@slice`
    is the metric on the rows of a slice the job defines."""
    base, at, slice_name = name.partition("@")
    if at:
        chosen = resolve(base, rows, classes, value_range)
        if chosen is None or not _SLICE_RE.match(slice_name):
            return None
        return Chosen(name, chosen.spec, chosen.index, slice_name)
    if rows == "regression":
        spec = regression_specs(*value_range).get(name) if value_range else None
        return Chosen(name, spec) if spec else None
    if name in CLASSIFICATION:
        return Chosen(name, CLASSIFICATION[name])
    if m := _PER_CLASS_RE.match(name):
        c = int(m.group(2))
        return Chosen(name, PER_CLASS[m.group(1)], c) if c < classes else None
    if m := _CONFUSION_RE.match(name):
        i, j = int(m.group(1)), int(m.group(2))
        if i < classes and j < classes:
            return Chosen(name, CONFUSION, i * classes + j)
    return None


# -- slices: rows chosen by predicates on the features ----------------------------------------------------------

_SLICE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


def slice_mask(x: np.ndarray, predicates: list[dict[str, Any]]) -> np.ndarray:
    """Rows where every predicate {feature, op, value} holds (a NaN feature satisfies none)."""
    mask = np.ones(len(x), dtype=bool)
    for p in predicates:
        column = x[:, int(p["feature"])].astype(np.float64)
        with np.errstate(invalid="ignore"):
            mask &= OPS[p["op"]](column, float(p["value"])) & ~np.isnan(column)
    return mask


def restrict(rows: Rows, truth: Truth, mask: np.ndarray) -> tuple[Rows, Truth]:
    def part(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[mask]

    return Rows(part(rows.probabilities), part(rows.labels), part(rows.values)), Truth(truth.y[mask], truth.classes)


def families(rows: RowsKind) -> list[str]:
    """The catalogue's metric families for these rows (a family is a metric, or per class / per cell)."""
    if rows == "regression":
        return ["mae", "mse"]
    return [*CLASSIFICATION, *PER_CLASS, "confusion"]


def family_of(name: str) -> str:
    name = name.partition("@")[0]
    if m := _PER_CLASS_RE.match(name):
        return m.group(1)
    if _CONFUSION_RE.match(name):
        return "confusion"
    return name


def available(rows: RowsKind, classes: int, needs: Literal["labels", "probabilities", "values"]) -> list[str]:
    """Every metric name these rows can give (for refusals that list what fits)."""
    if rows == "regression":
        return ["mae", "mse"]
    names = [n for n, s in CLASSIFICATION.items() if needs == "probabilities" or s.needs == "labels"]
    names += [f"{p}_{c}" for p in PER_CLASS for c in range(classes)]
    names += [f"confusion_{i}_{j}" for i in range(classes) for j in range(classes)]
    return names


# -- reading a job's rows -------------------------------------------------------------------------------------


def load_rows_file(raw: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of a job's rows file (.npz), refused unless it is a small zip of plain .npy members
    whose unpacked sizes, declared and real, stay within max_bytes (no zip bombs, no pickles)."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            infos = zf.infolist()
            if not 1 <= len(infos) <= 3 or any(not i.filename.endswith(".npy") or "/" in i.filename for i in infos):
                raise RowsRejected("the rows file must be an .npz of one to three .npy arrays")
            if sum(i.file_size for i in infos) > max_bytes:
                raise RowsRejected(f"the rows file unpacks to more than {max_bytes} bytes")
            arrays = {}
            for info in infos:
                with zf.open(info) as f:
                    data = f.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise RowsRejected(f"the rows file unpacks to more than {max_bytes} bytes")
                arrays[info.filename[: -len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
            return arrays
    except RowsRejected:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError, NotImplementedError) as e:
        raise RowsRejected(f"the rows file is not a readable .npz without pickles: {type(e).__name__}") from None


def project_probabilities(p: np.ndarray, strict: bool) -> np.ndarray:
    """Rows onto the probability simplex. `strict` (a model whose output is declared probabilities):
    only float rounding is forgiven (values ≥ -1e-5, sums within 1 ± 1e-5), anything else is refused.
    Otherwise (the job's own post-processing) every row is projected: clipped into [0, 1] and
    renormalised, a row of zeros becoming uniform."""
    p = p.astype(np.float64)
    if strict:
        sums = p.sum(axis=1)
        worst_low, worst_sum = float(p.min(initial=0.0)), float(np.max(np.abs(sums - 1.0), initial=0.0))
        if worst_low < -PROB_TOLERANCE or worst_sum > PROB_TOLERANCE:
            raise RowsRejected(
                f"the model's rows are not probabilities: least value {worst_low:.3g}, "
                f"largest |row sum - 1| {worst_sum:.3g} (tolerance {PROB_TOLERANCE}); register the model "
                "with output_kind=logits if its output is scores"
            )
    p = np.clip(p, 0.0, 1.0)
    sums = p.sum(axis=1, keepdims=True)
    k = p.shape[1]
    return np.where(sums > 0, p / np.where(sums > 0, sums, 1.0), 1.0 / k)


def read_rows(
    arrays: dict[str, np.ndarray],
    rows: RowsKind,
    n: int,
    classes: int,
    strict: bool,
    value_range: tuple[float, float] | None = None,
) -> Rows:
    """Check and project a job's rows file (already loaded, without pickles)."""
    expected = {"classification": {"probabilities", "label"}, "regression": {"value"}}[rows]
    given = set(arrays)
    if len(given) != 1 or not given <= expected:
        raise RowsRejected(f"the rows file must hold exactly one of {sorted(expected)}; it holds {sorted(given)}")
    name, a = next(iter(arrays.items()))
    if a.dtype.kind not in "fiu":
        raise RowsRejected(f"{name} must be numeric, not {a.dtype}")
    if name == "probabilities":
        if a.shape != (n, classes):
            raise RowsRejected(f"probabilities must have shape ({n}, {classes}), not {a.shape}")
        if not np.all(np.isfinite(a)):
            raise RowsRejected("probabilities hold NaN or infinite values")
        return Rows(probabilities=project_probabilities(a, strict))
    if a.shape != (n,):
        raise RowsRejected(f"{name} must have shape ({n},), not {a.shape}")
    if not np.all(np.isfinite(a)):
        raise RowsRejected(f"{name} holds NaN or infinite values")
    if name == "label":
        labels = a.astype(np.float64)
        if strict and (
            np.any(labels != np.round(labels)) or labels.min(initial=0) < 0 or labels.max(initial=0) >= classes
        ):
            raise RowsRejected(f"the model's labels are not whole numbers in 0..{classes - 1}")
        return Rows(labels=np.clip(np.round(labels), 0, classes - 1).astype(np.int64))
    assert value_range is not None
    return Rows(values=np.clip(a.astype(np.float64), *value_range))
