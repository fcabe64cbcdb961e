"""Differential-privacy noise for released metrics, from OpenDP (never hand-rolled).

The privacy unit is one dataset row. A job's ε is split evenly over its noised metrics (sequential
composition), and each metric gets a Laplace (pure ε) or Gaussian ((ε, δ) through zCDP) measurement
whose scale OpenDP finds for that metric's row sensitivity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import TYPE_CHECKING

from service.errors import InvalidRequest

if TYPE_CHECKING:
    from opendp.mod import Measurement

MECHANISMS = ("laplace", "gaussian")

# The smallest ε per noised metric a job or a policy may name. Budgets are counted in whole millionths
# of ε (service.quotas), so a smaller ε could not be charged; and long before OpenDP stops finding a
# Laplace scale (below about 1e-13 at a sensitivity of 1), the noise would bury any result.
MIN_EPSILON = 1e-6


@dataclass(frozen=True)
class Noise:
    mechanism: str
    epsilon: float
    delta: float
    sensitivity: float
    scale: float

    def as_dict(self) -> dict[str, str | float]:
        return {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "sensitivity": self.sensitivity,
            "scale": self.scale,
        }


@lru_cache(maxsize=1)
def _dp() -> SimpleNamespace:
    """The parts of OpenDP the gate uses. Not `opendp.prelude`: it also imports OpenDP's scikit-learn
    extras, about 3 s of every process's first release (and registration, service.twins) here."""
    from opendp import combinators, domains, measurements, metrics, mod

    mod.enable_features("contrib")
    return SimpleNamespace(
        OpenDPException=mod.OpenDPException,
        atom_domain=domains.atom_domain,
        vector_domain=domains.vector_domain,
        absolute_distance=metrics.absolute_distance,
        l1_distance=metrics.l1_distance,
        l2_distance=metrics.l2_distance,
        binary_search_param=mod.binary_search_param,
        m=measurements,
        c=combinators,
    )


def _measurement(mechanism: str, integer: bool, scale: float, delta: float, vector: bool = False) -> Measurement:
    dp = _dp()
    if vector:  # counts: L1 sensitivity for Laplace, L2 for Gaussian
        distance = dp.l1_distance(T=float) if mechanism == "laplace" else dp.l2_distance(T=float)
        space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), distance
    elif integer:
        space = dp.atom_domain(T=int), dp.absolute_distance(T=int)
    else:
        space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    if mechanism == "laplace":
        laplace: Measurement = dp.m.make_laplace(*space, scale=scale)
        return laplace
    if mechanism == "gaussian":
        zcdp = dp.m.make_gaussian(*space, scale=scale)
        gaussian: Measurement = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(zcdp), delta=delta)
        return gaussian
    raise ValueError(f"unknown mechanism {mechanism}")


@lru_cache(maxsize=4096)  # a pure function of its arguments, and OpenDP's search takes ~20 ms
def calibrate(
    mechanism: str, *, epsilon: float, sensitivity: float, integer: bool, delta: float = 0.0, vector: bool = False
) -> Noise:
    """The smallest scale whose privacy loss at this sensitivity is at most epsilon (and delta).
    `vector`: noise on a vector of counts whose L1 (Laplace) or L2 (Gaussian) sensitivity is given.

    Where no scale gives that loss (an ε so small that the scale OpenDP needs overflows), the request
    is refused `invalid_request` naming the smallest ε taken, never a 500; nothing is released."""
    dp = _dp()
    d_in = math.ceil(sensitivity) if integer and not vector else float(sensitivity)
    d_out = epsilon if mechanism == "laplace" else (epsilon, delta)
    try:
        scale = dp.binary_search_param(
            lambda s: _measurement(mechanism, integer, s, delta, vector), d_in=d_in, d_out=d_out, T=float
        )
    except dp.OpenDPException as e:
        raise _uncalibrated(mechanism, epsilon, d_in) from e
    if not (math.isfinite(scale) and scale > 0):
        raise _uncalibrated(mechanism, epsilon, d_in)
    return Noise(
        mechanism=mechanism,
        epsilon=epsilon,
        delta=delta if mechanism == "gaussian" else 0.0,
        sensitivity=float(d_in),
        scale=float(scale),
    )


def _uncalibrated(mechanism: str, epsilon: float, sensitivity: float) -> InvalidRequest:
    return InvalidRequest(
        f"no {mechanism} noise gives epsilon {epsilon:g} per metric at sensitivity {sensitivity:g}: "
        f"epsilon per metric must be at least {MIN_EPSILON:g} (the job's, or its dataset's policy default)",
        alternatives=[f"epsilon >= {MIN_EPSILON:g}"],
    )


def add_noise(value: float, noise: Noise, *, integer: bool) -> float:
    """One draw from OpenDP's sampler (a fresh measurement, so no state is shared between releases)."""
    meas = _measurement(noise.mechanism, integer, noise.scale, noise.delta)
    return float(meas(round(value) if integer else float(value)))


def add_noise_vector(values: list[float], noise: Noise) -> list[float]:
    """One draw per coordinate from OpenDP's vector sampler, calibrated with vector=True."""
    meas = _measurement(noise.mechanism, False, noise.scale, noise.delta, vector=True)
    return [float(v) for v in meas([float(v) for v in values])]
