"""The metric catalogue: every released number has a kind, and the kind fixes its range, its grid and
how much one dataset row can move it.

Suites declare each metric by kind in suite.yaml:

    metrics:
      accuracy: proportion                       # a mean of a 0/1 quantity per row
      macro_f1: {kind: proportion, per_class: true, sensitivity: 4}
      misclassified: count
      log_loss: {kind: nonnegative, max: 30}

`sensitivity` is a row's weight: one row changes a proportion by at most sensitivity / n (n = the rows
it was computed on, or the smallest class's rows when `per_class`), and a count by at most
sensitivity. It can only be declared larger than 1, never smaller. The differential-privacy noise is
calibrated to it, so it holds only if the code computes what it declares: built-in suites are the
operator's, and custom suites are reviewed before approval.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KINDS = ("proportion", "count", "nonnegative", "real")
Kind = Literal["proportion", "count", "nonnegative", "real"]
# An unbounded real has no range to check and no count of distinguishable values: a bound is required.
DEFAULT_NONNEGATIVE_MAX = 1e6


class MetricDecl(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    per_class: bool = Field(default=False, description="computed per class or weighted by the smallest class")
    sensitivity: float = Field(default=1.0, ge=1.0, le=1e6)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> MetricDecl:
        if self.kind in ("proportion", "count") and (self.min is not None or self.max is not None):
            raise ValueError(f"a {self.kind} has a fixed range; min and max are not declared")
        if self.kind == "nonnegative" and self.min not in (None, 0.0):
            raise ValueError("a nonnegative metric starts at 0")
        if self.kind == "real" and (self.min is None or self.max is None):
            raise ValueError("a real metric needs min and max")
        for bound in (self.min, self.max):
            if bound is not None and (not math.isfinite(bound) or abs(bound) > 1e12):
                raise ValueError("bounds must be finite and within ±1e12")
        lo, hi = self.min if self.min is not None else 0.0, self.max
        if hi is not None and hi <= lo:
            raise ValueError("max must be above min")
        return self

    def bounds(self, n: int) -> tuple[float, float]:
        """The valid range of a value computed on n rows."""
        if self.kind == "proportion":
            return 0.0, 1.0
        if self.kind == "count":
            return 0.0, float(n)
        if self.kind == "nonnegative":
            return 0.0, self.max if self.max is not None else DEFAULT_NONNEGATIVE_MAX
        assert self.min is not None and self.max is not None  # _bounds: a real metric declares both
        return float(self.min), float(self.max)

    @property
    def integer(self) -> bool:
        return self.kind == "count"

    def row_sensitivity(self, n_eff: int) -> float | None:
        """How far one row can move the value, in the value's own units; None when unbounded."""
        if self.kind == "proportion":
            return self.sensitivity / max(n_eff, 1)
        if self.kind == "count":
            return self.sensitivity
        return None


def parse_declarations(raw: object) -> dict[str, MetricDecl]:
    """suite.yaml `metrics`: a mapping of name to a kind, or to a full declaration."""
    if not isinstance(raw, dict):
        raise ValueError("metrics must map each name to its kind, e.g. {accuracy: proportion}")
    out = {}
    for name, decl in raw.items():
        if isinstance(decl, str):
            decl = {"kind": decl}
        if not isinstance(decl, dict):
            raise ValueError(f"metric {name!r}: give a kind ({', '.join(KINDS)}) or a mapping with one")
        out[str(name)] = MetricDecl.model_validate(decl)
    return out


def grid(decl: MetricDecl, decimals: int) -> float:
    """The spacing of released values."""
    return 1.0 if decl.integer else 10.0**-decimals


def bits(decl: MetricDecl, n: int, decimals: int, noise_scale: float | None, extra_outcomes: int = 0) -> float:
    """log2 of how many outcomes one metric can have: the values its range holds on the grid (or on
    the noise scale, where that is coarser, as noisier values cannot be told apart as finely), plus
    any other outcomes (such as being withheld)."""
    lo, hi = decl.bounds(n)
    step = max(grid(decl, decimals), noise_scale or 0.0)
    return math.log2(math.floor((hi - lo) / step) + 1 + extra_outcomes)
