"""A suite's manifest (`suite.yaml`): its name, version, entrypoint and what it reports.

In metrics mode the suite's code reports the metrics it declares, by kind; in rows mode it writes one
row per dataset row and the service computes the metrics from them and the labels, which the code
never sees. Errors name the line of what is wrong.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from service.errors import EvalgateError
from service.registry import errors
from service.registry.paths import clean_name
from service.release import metrics
from service.release.catalogue import MetricDecl, parse_declarations

MANIFEST = "suite.yaml"
NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
SEMVER_RE = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]{1,32})?$"
METRIC_RE = r"^[a-z][a-z0-9_]{0,63}$"


class RowsDecl(BaseModel):
    """What a rows-mode suite's code writes, one row per dataset row, and which of the service's
    metrics it offers (service.release.metrics)."""

    model_config = {"extra": "forbid"}

    kind: Literal["classification", "regression"]
    # Regression: predictions are clamped into this range, and errors counted up to its width.
    value_range: tuple[float, float] | None = None
    offers: list[str] | None = Field(default=None, description="metric families offered; all if omitted")

    @model_validator(mode="after")
    def _check(self) -> RowsDecl:
        if self.kind == "regression":
            if self.value_range is None:
                raise ValueError("regression rows need value_range: [min, max]")
            lo, hi = self.value_range
            if not (math.isfinite(lo) and math.isfinite(hi) and -1e12 <= lo < hi <= 1e12):
                raise ValueError("value_range must be finite, within ±1e12, min below max")
        elif self.value_range is not None:
            raise ValueError("value_range is for regression rows only")
        known = metrics.families(self.kind)
        unknown = sorted(set(self.offers or []) - set(known))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; the catalogue has {known}")
        return self

    def offered(self) -> list[str]:
        return self.offers or metrics.families(self.kind)


class SuiteManifest(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=NAME_RE)
    version: str = Field(pattern=SEMVER_RE)
    entrypoint: str
    # "metrics": the code reports metrics it declares by kind; "rows": it writes per-row outputs and
    # the service computes the metrics from them and the labels, which the code never sees.
    mode: Literal["metrics", "rows"] = "metrics"
    metrics: dict[str, MetricDecl] = Field(default_factory=dict, description="name -> kind (metrics mode)")
    rows: RowsDecl | None = None
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _mode(self) -> SuiteManifest:
        if self.mode == "metrics" and (not self.metrics or self.rows is not None):
            raise ValueError("a metrics-mode suite declares its metrics (and no rows)")
        if self.mode == "rows" and (self.rows is None or self.metrics):
            raise ValueError("a rows-mode suite declares its rows (the service's catalogue names the metrics)")
        return self

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, v: str) -> str:
        try:
            clean_name(v)
        except EvalgateError as e:
            raise ValueError(e.detail) from None
        if not v.endswith(".py"):
            raise ValueError("entrypoint must be a .py file")
        return v

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, v: object) -> dict[str, MetricDecl]:
        decls = parse_declarations(v)
        for m in decls:
            if not re.match(METRIC_RE, m):
                raise ValueError(f"metric name {m!r} must match {METRIC_RE}")
        return decls

    def rows_table(self) -> dict[str, Any] | None:
        """The rows declaration as stored with the suite version (JSON)."""
        if self.rows is None:
            return None
        return {"kind": self.rows.kind, "value_range": self.rows.value_range, "offers": self.rows.offered()}

    def metric_table(self) -> dict[str, dict[str, Any]]:
        """The declarations as stored with the suite version (JSON)."""
        return {
            name: d.model_dump(exclude_defaults=True) | {"kind": d.kind} for name, d in sorted(self.metrics.items())
        }


def load_manifest_file(path: Path) -> SuiteManifest:
    """The manifest, or BundleBadManifest naming the line (and column) of what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
        return SuiteManifest.model_validate(raw)
    except UnicodeDecodeError:
        raise errors.BundleBadManifest(f"{MANIFEST} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise errors.BundleBadManifest(f"{MANIFEST} is not valid YAML{where}: {problem}") from None
    except ValidationError as e:
        lines = _key_lines(text)
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'the top level'}"
            + (f" (line {lines[err['loc'][0]]})" if err["loc"] and err["loc"][0] in lines else "")
            + f": {err['msg']}"
            for err in e.errors()
        )
        raise errors.BundleBadManifest(f"{MANIFEST}: {problems}") from None


def _key_lines(text: str) -> dict[object, int]:
    """The line of each top-level key of a YAML mapping, for messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def load_manifest(root: Path, max_metrics: int) -> SuiteManifest:
    """The manifest at the top of an unpacked bundle, checked against the bundle's files."""
    path = root / MANIFEST
    if not path.is_file():
        raise errors.BundleNoManifest(f"bundle has no {MANIFEST} at its top level")
    manifest = load_manifest_file(path)
    if len(manifest.metrics) > max_metrics:
        raise errors.BundleBadManifest(f"a suite may declare at most {max_metrics} metrics")
    if not (root / manifest.entrypoint).is_file():
        found = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if p.is_file())[:20]
        raise errors.BundleBadManifest(
            f"entrypoint {manifest.entrypoint!r} is not in the bundle",
            alternatives=[f"entrypoint: {f}" for f in found] or ["add the entrypoint file to the suite directory"],
        )
    return manifest
