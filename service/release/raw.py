"""A run's raw (pre-noise) result, in the one form a reproduction compares, and its HMAC.

At release the gate records HMAC-SHA256(server secret, canonical JSON of the job id and its raw
statistics); a reproduction (service.reproductions) computes the same over its re-run and compares.
Never a plain hash: a metric has few likely values, so a published sha256 of raw values would give
them away to anyone who tries the candidates. The secret (`<data_dir>/keys/reproduction.secret`,
0600, made on first use, shared by the API and the workers as the signing key is) never leaves the
server, is never logged, and is passed to no process.

The raw statistics are what noise would be added to: a rows-mode metric's mean (its total and rows),
total or counts, as the trusted metric code computes them from the job's rows and the labels; a
metrics-mode metric's value, rows and smallest class as the job reported them. Floats are written
with 12 significant digits, so the same computation always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from service.canonical import canonical_json
from service.keyfiles import server_secret
from service.release import metrics

SECRET_FILE = "reproduction.secret"


def secret_path(data_dir: Path) -> Path:
    return data_dir / "keys" / SECRET_FILE


@lru_cache(maxsize=8)
def secret(data_dir: Path) -> bytes:
    """The deployment's raw-result secret, made (0600) on first use beside the signing key."""
    return server_secret(secret_path(data_dir))


def number(v: float | int | np.number[Any]) -> float | str:
    """One value as it is compared: 12 significant digits (a non-finite value, which no released
    metric can be, by name)."""
    f = float(v)
    return float(f"{f:.12g}") if math.isfinite(f) else repr(f)


def statistic(stat: metrics.Statistic) -> Any:
    """What noise would be added to, for one rows-mode metric."""
    if isinstance(stat, metrics.Mean):
        return {"total": number(stat.total), "n": int(stat.n)}
    if isinstance(stat, metrics.Total):
        return number(stat.value)
    return [number(v) for v in np.asarray(stat.counts).ravel()]


def digest(key: bytes, job_id: str, raw: dict[str, Any]) -> str:
    """HMAC-SHA256 of a job's raw result under the server secret (hex). The job id is part of what is
    authenticated, so equal results of two jobs do not have equal digests."""
    message = canonical_json({"job_id": job_id, "raw": raw}).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
