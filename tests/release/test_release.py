"""The gate after parsing: suppression, OpenDP noise, clamping, the grid and the bits charged."""

import math
import statistics

import pytest

from service.release import privacy
from service.release.catalogue import MetricDecl
from service.release.gate import (
    Policy,
    Reported,
    max_bits,
    noise_grid_bits,
    noised,
    outcome_bits,
    release,
    snap_rows,
)

PROP, COUNT = MetricDecl(kind="proportion"), MetricDecl(kind="count")
PER_CLASS = MetricDecl(kind="proportion", per_class=True, sensitivity=4)
LOSS = MetricDecl(kind="nonnegative", max=28)
EXACT = Policy(mechanism=None)


def test_exact_policy_rounds_to_the_grid_only():
    out = release(
        {"a": Reported(0.123456, 1000), "loss": Reported(1.98766, 1000)},
        {"a": PROP, "loss": LOSS},
        epsilon=0.1,
        policy=EXACT,
    )
    assert out.metrics == {"a": 0.1235, "loss": 1.9877} and out.noise == {} and out.suppressed == []
    # What such a release can carry: each value on its grid, or withheld for one of two reasons.
    assert max_bits({"a": PROP, "loss": LOSS}, 1000, 0.1, EXACT) == pytest.approx(
        math.log2(10_003) + math.log2(280_003)
    )


def test_small_cells_are_withheld_and_the_partner_is_told_why():
    decls = {"a": PROP, "f1": PER_CLASS, "loss": LOSS}
    out = release(
        {"a": Reported(0.9, 40), "f1": Reported(0.8, 1000, 12), "loss": Reported(0.3, 1000)},
        decls,
        epsilon=0.1,
        policy=Policy(mechanism=None, min_rows=50, min_class_rows=20),
    )
    assert out.metrics == {"loss": 0.3}
    assert out.suppressed == [
        {"metric": "a", "reason": "computed on fewer than 50 rows"},
        {"metric": "f1", "reason": "a class has fewer than 20 rows"},
    ]
    assert "0.9" not in str(out.disclosure(1.0)) and "12" not in str(out.disclosure(1.0))  # no counts told


def test_noise_comes_from_opendp_with_its_parameters_attached():
    calls = []

    def spy(value, noise, integer):
        calls.append((value, noise, integer))
        return privacy.add_noise(value, noise, integer=integer)

    out = release(
        {"a": Reported(0.5, 1000), "n": Reported(400, 1000), "loss": Reported(1.0, 1000)},
        {"a": PROP, "n": COUNT, "loss": LOSS},
        epsilon=0.2,
        policy=Policy(),
        add_noise=spy,
    )
    assert [c[0] for c in calls] == [0.5, 400]  # the nonnegative real is not noised
    assert out.noise["a"] == {
        "mechanism": "laplace",
        "epsilon": 0.2,
        "delta": 0.0,
        "sensitivity": 0.001,
        "scale": 0.005,
    }
    assert out.noise["n"]["scale"] == pytest.approx(5.0) and out.noise["n"]["sensitivity"] == 1.0
    assert out.metrics["n"] == int(out.metrics["n"])
    assert 0 <= out.metrics["a"] <= 1 and 0 <= out.metrics["n"] <= 1000


def test_per_class_metrics_are_calibrated_to_the_smallest_class_on_a_coarse_grid():
    """The job reports its smallest class (100 rows): the noise is calibrated to 64, the power of two
    below, so the sensitivity it discloses says only which power of two the job chose."""
    out = release({"f1": Reported(0.7, 1000, 100)}, {"f1": PER_CLASS}, epsilon=0.5, policy=Policy(), dataset_rows=1000)
    assert out.noise["f1"]["sensitivity"] == pytest.approx(4 / 64)
    assert out.noise["f1"]["scale"] == pytest.approx(4 / 64 / 0.5)


def test_noise_is_calibrated_from_what_the_service_knows_not_the_jobs_exact_count():
    seen = set()
    for n in [*range(600, 1000, 7), 1000]:  # a job choosing its n to encode a secret
        out = release({"a": Reported(0.5, n)}, {"a": PROP}, epsilon=0.5, policy=Policy(), dataset_rows=1000)
        seen.add(round(1 / out.noise["a"]["sensitivity"]))
    # Two values only (all rows: 1/1000; fewer: 1/512): what max_bits charges for, not 58 of them.
    assert seen == {1000, 512}
    assert snap_rows(1000, 1000) == 1000 and snap_rows(999, 1000) == 512 and snap_rows(1, 1000) == 1
    assert noise_grid_bits(1000) == pytest.approx(math.log2(11))


def test_the_noise_has_the_spread_its_scale_promises():
    noise = privacy.calibrate("laplace", epsilon=0.5, sensitivity=0.01, integer=False)
    draws = [privacy.add_noise(0.5, noise, integer=False) - 0.5 for _ in range(4000)]
    # Laplace(b): mean absolute deviation b. With 4000 draws the estimate is within 10% almost surely.
    assert statistics.fmean(abs(d) for d in draws) == pytest.approx(noise.scale, rel=0.1)
    assert len(set(draws)) > 3900  # fresh randomness every draw


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_calibrated_scale_meets_the_privacy_target(mechanism):
    import opendp.prelude as dp

    noise = privacy.calibrate(mechanism, epsilon=0.3, sensitivity=0.002, integer=False, delta=1e-7)
    meas = privacy._measurement(mechanism, False, noise.scale, 1e-7)
    loss = meas.map(0.002)
    eps = loss if mechanism == "laplace" else loss[0]
    assert eps <= 0.3 + 1e-9
    # And it is the least noise that does: 1% less noise would spend more than asked.
    tighter = privacy._measurement(mechanism, False, noise.scale * 0.99, 1e-7).map(0.002)
    assert (tighter if mechanism == "laplace" else tighter[0]) > 0.3
    assert dp is not None


def test_clamping_keeps_noisy_values_in_range():
    out = [
        release({"a": Reported(0.999, 60)}, {"a": PROP}, epsilon=0.05, policy=Policy()).metrics["a"] for _ in range(200)
    ]
    assert all(0.0 <= v <= 1.0 for v in out) and 1.0 in out and len(set(out)) > 10


def test_noise_narrows_what_a_release_can_carry():
    decls = {"a": PROP, "n": COUNT, "loss": LOSS}
    exact, noisy = max_bits(decls, 1000, 0.1, EXACT), max_bits(decls, 1000, 0.1, Policy())
    # Laplace scale 0.01 on the proportion (101 + 2 outcomes) and 10 on the count (101 + 2), each
    # with which of 11 calibrations its noise disclosed (1000 rows, or a power of two below).
    assert noisy == pytest.approx(2 * math.log2(103) + math.log2(280_003) + 2 * math.log2(11))
    assert noisy < exact
    assert noised(decls, Policy()) == ["a", "n"] and noised(decls, EXACT) == []


def test_outcome_bits():
    assert outcome_bits(9, 8) == pytest.approx(math.log2(9) + 3)
