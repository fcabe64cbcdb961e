"""The release gate: what may leave the sandbox. Pure functions, no I/O.

1. parse: the job's one result file must be UTF-8 JSON, a flat object with exactly the requested
   metric names. Each value is a finite number, or {"value": v, "n": rows, "min_class_n": rows} when
   the metric was computed on fewer rows than the dataset has, or per class.
2. type: each value must lie in its declared kind's range (a count must be a whole number).
   Anything wrong in 1 or 2 rejects the whole result; nothing of it reaches the partner.
3. suppress: a metric computed on too few rows (or with too small a class) is withheld, and the
   partner is told which and why.
4. noise: metrics of the kinds policy names get OpenDP noise for the job's ε per metric (sequential
   composition: the job spends ε times their number), and are clamped back into range
   (post-processing, so no privacy cost).
5. round: every value is put on its kind's grid.

What a release can carry is fixed before the job runs (max_bits): each metric is one of the values
its range holds on its grid (or that its noise lets be told apart), or withheld for one of two
reasons. The job is charged that whatever it reports, since what it reports (even n) is its choice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import numpy as np

from service.config import Settings
from service.release import metrics, privacy
from service.release.catalogue import MetricDecl, bits, grid

ENTRY_KEYS = frozenset({"value", "n", "min_class_n"})


class OutputRejected(Exception):
    """The result file broke a rule. `reason` is for operators; partners only see `output_rejected`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Reported:
    value: float
    n: int
    min_class_n: int | None = None


@dataclass(frozen=True)
class Policy:
    decimals: int = 4
    min_rows: int = 50
    min_class_rows: int = 20
    mechanism: str | None = "laplace"  # None: no noise at all
    noised_kinds: frozenset[str] = frozenset({"proportion", "count"})
    delta: float = 1e-7

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            decimals=settings.release_decimals,
            min_rows=settings.suppress_below_rows,
            min_class_rows=settings.suppress_below_class_rows,
            mechanism=None if settings.dp_mechanism == "none" else settings.dp_mechanism,
            noised_kinds=frozenset(settings.dp_noised_kinds),
            delta=settings.dp_delta,
        )


@dataclass
class Release:
    metrics: dict[str, float] = field(default_factory=dict)
    suppressed: list[dict[str, str]] = field(default_factory=list)
    noise: dict[str, dict[str, str | float]] = field(default_factory=dict)

    def disclosure(self, bits: float) -> dict[str, Any]:
        """What the partner is told about how the values were made, and the bits it was charged."""
        return {"suppressed": self.suppressed, "noise": self.noise, "bits": round(bits, 3)}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise OutputRejected(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def _no_constants(name: str) -> NoReturn:
    raise OutputRejected(f"non-finite constant {name}")


def _number(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OutputRejected(f"metric {name!r} is not a number")
    try:
        f = float(v)
    except OverflowError:  # an integer too large for a float
        raise OutputRejected(f"metric {name!r} is too large a number") from None
    if not math.isfinite(f):
        raise OutputRejected(f"metric {name!r} is not finite")
    return f


def _rows(name: str, what: str, v: object, upper: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= upper:
        raise OutputRejected(f"metric {name!r}: {what} must be a whole number in [0, {upper}]")
    return v


def _entry(name: str, v: object, dataset_rows: int) -> Reported:
    if not isinstance(v, dict):
        return Reported(_number(name, v), dataset_rows)
    extra = set(v) - ENTRY_KEYS
    if extra or "value" not in v:
        raise OutputRejected(f"metric {name!r}: an entry has 'value' and optionally 'n' and 'min_class_n' only")
    n = _rows(name, "n", v.get("n", dataset_rows), dataset_rows)
    min_class = v.get("min_class_n")
    return Reported(
        _number(name, v["value"]), n, None if min_class is None else _rows(name, "min_class_n", min_class, n)
    )


def parse_result(
    raw: bytes, decls: dict[str, MetricDecl], *, dataset_rows: int, max_bytes: int, max_metrics: int
) -> dict[str, Reported]:
    if len(raw) > max_bytes:
        raise OutputRejected(f"result larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise OutputRejected("result is not UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except OutputRejected:
        raise
    except (ValueError, RecursionError):
        raise OutputRejected("result is not valid JSON") from None
    if not isinstance(value, dict):
        raise OutputRejected("result is not a JSON object")
    if len(value) > max_metrics:
        raise OutputRejected(f"more than {max_metrics} metrics")
    undeclared = set(value) - set(decls)
    if undeclared:
        raise OutputRejected(f"undeclared metrics {sorted(undeclared)}")
    missing = set(decls) - set(value)
    if missing:
        raise OutputRejected(f"missing metrics {sorted(missing)}")
    out = {name: _entry(name, v, dataset_rows) for name, v in value.items()}
    for name, r in out.items():
        check_kind(name, r, decls[name])
    return out


def check_kind(name: str, r: Reported, decl: MetricDecl) -> None:
    lo, hi = decl.bounds(r.n)
    if not lo <= r.value <= hi:
        raise OutputRejected(f"metric {name!r} = {r.value!r} is outside its kind {decl.kind} [{lo}, {hi}]")
    if decl.integer and r.value != math.floor(r.value):
        raise OutputRejected(f"metric {name!r} is a count but {r.value!r} is not a whole number")
    if decl.per_class and r.min_class_n is None:
        raise OutputRejected(f"metric {name!r} is per class but its entry has no min_class_n")


def noised(decls: dict[str, MetricDecl], policy: Policy) -> list[str]:
    """The metrics policy puts noise on, in order."""
    if policy.mechanism is None:
        return []
    return sorted(name for name, d in decls.items() if d.kind in policy.noised_kinds and d.row_sensitivity(1))


def _noise_for(decl: MetricDecl, n_eff: int, epsilon: float, policy: Policy) -> privacy.Noise:
    return privacy.calibrate(
        policy.mechanism,
        epsilon=epsilon,
        sensitivity=decl.row_sensitivity(n_eff),
        integer=decl.integer,
        delta=policy.delta,
    )


def snap_rows(n: int, dataset_rows: int) -> int:
    """The rows the noise of a metric the job says it computed on n rows is calibrated to: all of the
    dataset's (which the service knows), or n rounded down to a power of two. The noise disclosed
    then says which of these few the job chose, and max_bits charges for that choice."""
    if n >= dataset_rows:
        return dataset_rows
    return 1 << max(0, n.bit_length() - 1)


def noise_grid_bits(dataset_rows: int) -> float:
    """What the choice of snap_rows carries: one of the powers of two up to the rows, or the rows."""
    return math.log2(dataset_rows.bit_length() + 1)


def max_bits(decls: dict[str, MetricDecl], dataset_rows: int, epsilon: float, policy: Policy) -> float:
    """The most a release of these metrics can carry: each metric on all rows with the least noise, or
    withheld for one of two reasons; and, for each noised one, which rows its noise was calibrated to
    (the job's choice, disclosed with the noise). `epsilon` is per noised metric."""
    chosen = set(noised(decls, policy))
    total = 0.0
    for name, d in decls.items():
        scale = _noise_for(d, dataset_rows, epsilon, policy).scale if name in chosen else None
        total += bits(d, dataset_rows, policy.decimals, scale, extra_outcomes=len(SUPPRESSION_REASONS))
        if name in chosen:
            total += noise_grid_bits(dataset_rows)
    return total


def _on_grid(value: float, decl: MetricDecl, n: int, decimals: int) -> float:
    lo, hi = decl.bounds(n)
    step = grid(decl, decimals)
    v = min(max(value, lo), hi)
    v = float(round(v)) if decl.integer else round(v, decimals)
    if v > hi:
        v = math.floor(hi / step) * step
    if v < lo:
        v = math.ceil(lo / step) * step
    v = round(v, decimals)
    return v if lo <= v <= hi else min(max(v, lo), hi)


SUPPRESSION_REASONS = ("rows", "class_rows")


class AddNoise(Protocol):
    """privacy.add_noise, or a stand-in for it."""

    def __call__(self, value: float, noise: privacy.Noise, *, integer: bool) -> float: ...


def _suppression(r: Reported, decl: MetricDecl, policy: Policy) -> str | None:
    """The partner is told which of SUPPRESSION_REASONS, never the counts."""
    if r.n < policy.min_rows:
        return f"computed on fewer than {policy.min_rows} rows"
    if decl.per_class:
        assert r.min_class_n is not None  # check_kind: a per-class metric's entry has min_class_n
        if r.min_class_n < policy.min_class_rows:
            return f"a class has fewer than {policy.min_class_rows} rows"
    return None


def release(
    reported: dict[str, Reported],
    decls: dict[str, MetricDecl],
    *,
    epsilon: float,
    policy: Policy,
    noised_metrics: list[str] | None = None,
    add_noise: AddNoise = privacy.add_noise,
    dataset_rows: int | None = None,
) -> Release:
    """`epsilon` is per noised metric; `noised_metrics` is the plan admitted (policy decides if None);
    `dataset_rows`: the dataset's rows (default: the most any entry reports)."""
    out = Release()
    chosen = set(noised(decls, policy) if noised_metrics is None else noised_metrics)
    if dataset_rows is None:
        dataset_rows = max((r.n for r in reported.values()), default=1)
    for name in sorted(reported):
        r, d = reported[name], decls[name]
        why = _suppression(r, d, policy)
        if why is not None:
            out.suppressed.append({"metric": name, "reason": why})
            continue
        value = r.value
        if name in chosen and epsilon > 0:
            n_eff = r.min_class_n if d.per_class else r.n
            assert n_eff is not None  # check_kind: a per-class metric's entry has min_class_n
            # Calibrated to rows the service knows or a coarse grid the charge covers, never to the
            # job's exact count (its sensitivity, disclosed, would carry that count).
            noise = _noise_for(d, snap_rows(n_eff, dataset_rows), epsilon, policy)
            value = add_noise(value, noise, integer=d.integer)
            out.noise[name] = noise.as_dict()
        out.metrics[name] = _on_grid(value, d, r.n, policy.decimals)
    return out


# -- rows mode: metrics computed by the service from a job's per-row outputs (see metrics.py) ---------------


class AddNoiseVector(Protocol):
    """privacy.add_noise_vector, or a stand-in for it."""

    def __call__(self, values: list[float], noise: privacy.Noise) -> list[float]: ...


def _rows_noise(stat: metrics.Statistic, n: int, epsilon: float, policy: Policy, integer: bool) -> privacy.Noise:
    assert policy.mechanism is not None
    if isinstance(stat, metrics.Counts):
        sensitivity = stat.l1 if policy.mechanism == "laplace" else stat.l2
        return privacy.calibrate(
            policy.mechanism, epsilon=epsilon, sensitivity=sensitivity, integer=False, delta=policy.delta, vector=True
        )
    sensitivity = stat.width / n if isinstance(stat, metrics.Mean) else stat.width
    return privacy.calibrate(
        policy.mechanism, epsilon=epsilon, sensitivity=sensitivity, integer=integer, delta=policy.delta
    )


def release_rows(
    rows: metrics.Rows,
    truth: metrics.Truth,
    chosen: list[metrics.Chosen],
    *,
    epsilon: float,
    policy: Policy,
    slices: dict[str, np.ndarray] | None = None,
    add_noise: AddNoise = privacy.add_noise,
    add_noise_vector: AddNoiseVector = privacy.add_noise_vector,
) -> Release:
    """Every requested metric from the rows and the labels; each one noised with `epsilon` (unless
    policy says no noise), put on its grid, or withheld when a class it is about is too small (judged
    on the noisy counts: post-processing, no further privacy cost). A metric on a slice (`slices`:
    its rows' mask) is computed on those rows; a mean there is the ratio of its noisy total and the
    slice's noisy count (each with half the metric's ε), and withheld if that count is too small."""
    out = Release()
    n = truth.n
    noisy = policy.mechanism is not None and epsilon > 0
    for c in sorted(chosen, key=lambda c: c.name):
        decl = c.spec.decl
        if c.slice is not None:
            assert slices is not None and c.slice in slices  # admission checked the names
            part_rows, part_truth = metrics.restrict(rows, truth, slices[c.slice])
            stat = c.spec.compute(part_rows, part_truth, c.index)
            if isinstance(stat, metrics.Mean):
                value_or_why = _slice_mean(stat, epsilon if noisy else 0.0, policy, add_noise, out, c.name)
                if isinstance(value_or_why, str):
                    out.suppressed.append({"metric": c.name, "reason": value_or_why})
                else:
                    out.metrics[c.name] = _on_grid(value_or_why, decl, n, policy.decimals)
                continue
        else:
            stat = c.spec.compute(rows, truth, c.index)
        noise = _rows_noise(stat, n, epsilon, policy, decl.integer) if noisy else None
        if isinstance(stat, metrics.Counts):
            counts = stat.counts
            if noise is not None:
                counts = np.asarray(add_noise_vector([float(v) for v in counts], noise))
            if stat.support is not None and stat.support(counts) < policy.min_class_rows:
                out.suppressed.append(
                    {"metric": c.name, "reason": f"a class has fewer than {policy.min_class_rows} rows"}
                )
                continue
            value = stat.finish(counts)
        else:
            value = stat.value
            if noise is not None:
                value = add_noise(value, noise, integer=decl.integer)
        if noise is not None:
            out.noise[c.name] = {**noise.as_dict(), "on": "counts" if isinstance(stat, metrics.Counts) else "value"}
        out.metrics[c.name] = _on_grid(value, decl, n, policy.decimals)
    return out


def _slice_mean(
    stat: metrics.Mean, epsilon: float, policy: Policy, add_noise: AddNoise, out: Release, name: str
) -> float | str:
    """A mean on a slice: noisy total / noisy count, or the reason it is withheld."""
    total, count = stat.total, float(stat.n)
    if epsilon > 0:
        assert policy.mechanism is not None
        half = epsilon / 2
        total_noise = privacy.calibrate(
            policy.mechanism, epsilon=half, sensitivity=stat.width, integer=False, delta=policy.delta
        )
        count_noise = privacy.calibrate(
            policy.mechanism, epsilon=half, sensitivity=1.0, integer=False, delta=policy.delta
        )
        total, count = add_noise(total, total_noise, integer=False), add_noise(count, count_noise, integer=False)
        out.noise[name] = {
            **total_noise.as_dict(),
            "epsilon": epsilon,
            "on": "slice total and count",
            "count_scale": count_noise.scale,
        }
    if count < policy.min_rows:
        return f"computed on fewer than {policy.min_rows} rows"
    return total / count


def rows_max_bits(chosen: list[metrics.Chosen], n: int, epsilon: float, policy: Policy) -> float:
    """The most a rows-mode release can carry: each metric a value on its grid (or on its noise
    scale where that is coarser; for metrics made from noisy counts, the grid), or withheld."""
    total = 0.0
    for c in chosen:
        decl = c.spec.decl
        scale = None
        if policy.mechanism is not None and epsilon > 0 and not c.spec.needs_counts and c.slice is None:
            width = c.spec.width
            sensitivity = width if c.spec.shape == "total" else width / n
            scale = privacy.calibrate(
                policy.mechanism, epsilon=epsilon, sensitivity=sensitivity, integer=decl.integer, delta=policy.delta
            ).scale
        total += bits(decl, n, policy.decimals, scale, extra_outcomes=len(SUPPRESSION_REASONS))
    return total


def outcome_bits(outcomes: int, time_buckets: int) -> float:
    """What a job's ending carries besides its values: which of the outcomes, and which time bucket."""
    return math.log2(outcomes) + math.log2(time_buckets)
