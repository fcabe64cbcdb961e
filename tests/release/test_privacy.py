"""Calibrating noise: where OpenDP can find no scale for an ε (far below MIN_EPSILON, for Laplace),
the caller gets the service's own 422 saying what ε is taken, never OpenDP's exception (a 500)."""

from __future__ import annotations

import math

import pytest

from service.errors import InvalidRequest
from service.release import privacy
from service.release.privacy import MIN_EPSILON

# (sensitivity, integer, vector) as the gate asks: a mean over rows, log loss, a count, class counts.
SHAPES = [(1 / 600, False, False), (15.9, False, False), (1.0, True, False), (4.0, False, True)]


@pytest.mark.parametrize("epsilon", [5e-324, 1e-30, 1e-20, 1e-15])
@pytest.mark.parametrize(("sensitivity", "integer", "vector"), SHAPES[1:])
def test_an_epsilon_no_laplace_scale_can_give_is_refused_with_the_floor(epsilon, sensitivity, integer, vector):
    with pytest.raises(InvalidRequest) as refused:
        privacy.calibrate("laplace", epsilon=epsilon, sensitivity=sensitivity, integer=integer, vector=vector)
    assert refused.value.status_code == 422 and refused.value.code == "invalid_request"
    assert f"at least {MIN_EPSILON:g}" in refused.value.detail
    assert refused.value.alternatives == [f"epsilon >= {MIN_EPSILON:g}"]


@pytest.mark.parametrize("mechanism", privacy.MECHANISMS)
@pytest.mark.parametrize(("sensitivity", "integer", "vector"), SHAPES)
def test_the_floor_is_calibrated_for_every_shape_the_gate_asks(mechanism, sensitivity, integer, vector):
    noise = privacy.calibrate(
        mechanism, epsilon=MIN_EPSILON, sensitivity=sensitivity, integer=integer, delta=1e-7, vector=vector
    )
    assert math.isfinite(noise.scale) and noise.scale > 0
    if mechanism == "laplace":  # Laplace's scale is sensitivity / ε
        assert noise.scale == pytest.approx(noise.sensitivity / MIN_EPSILON, rel=1e-6)
