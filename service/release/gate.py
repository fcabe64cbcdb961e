"""Release gate v1: what may leave the sandbox. Pure functions, no I/O.

The job's one result file must be UTF-8 JSON: a flat object mapping exactly the requested metric
names to finite numbers. Anything else is rejected whole; nothing of it reaches the partner.
"""

from __future__ import annotations

import json
import math


class OutputRejected(Exception):
    """The result file broke a rule. `reason` is for operators; partners only see `output_rejected`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise OutputRejected(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def _no_constants(name):
    raise OutputRejected(f"non-finite constant {name}")


def parse_result(raw: bytes, requested: list[str], *, max_bytes: int, max_metrics: int) -> dict[str, float]:
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
    undeclared = set(value) - set(requested)
    if undeclared:
        raise OutputRejected(f"undeclared metrics {sorted(undeclared)}")
    missing = set(requested) - set(value)
    if missing:
        raise OutputRejected(f"missing metrics {sorted(missing)}")
    out: dict[str, float] = {}
    for name, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise OutputRejected(f"metric {name!r} is not a number")
        f = float(v)  # a huge int raises OverflowError here
        if not math.isfinite(f):
            raise OutputRejected(f"metric {name!r} is not finite")
        out[name] = f
    return out


def round_significant(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return 0.0 if value == 0 else value
    return float(f"{value:.{digits}g}")


def release_values(metrics: dict[str, float], digits: int) -> dict[str, float]:
    return {k: round_significant(v, digits) for k, v in sorted(metrics.items())}
