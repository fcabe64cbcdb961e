import math

import pytest

from service.release.catalogue import MetricDecl, bits, parse_declarations


def test_a_kind_name_or_a_full_declaration():
    decls = parse_declarations(
        {
            "accuracy": "proportion",
            "f1": {"kind": "proportion", "per_class": True, "sensitivity": 4},
            "errors": "count",
            "loss": {"kind": "nonnegative", "max": 30},
            "mcc": {"kind": "real", "min": -1, "max": 1},
        }
    )
    assert decls["accuracy"].bounds(500) == (0.0, 1.0)
    assert decls["errors"].bounds(500) == (0.0, 500.0) and decls["errors"].integer
    assert decls["loss"].bounds(500) == (0.0, 30.0)
    assert decls["mcc"].bounds(500) == (-1.0, 1.0)
    assert decls["f1"].row_sensitivity(200) == pytest.approx(4 / 200)
    assert decls["errors"].row_sensitivity(200) == 1.0
    assert decls["loss"].row_sensitivity(200) is None  # unbounded per row: never noised, only rounded


@pytest.mark.parametrize(
    "raw, problem",
    [
        (["accuracy"], "map each name to its kind"),
        ({"accuracy": "probability"}, "kind"),
        ({"accuracy": 3}, "give a kind"),
        ({"accuracy": {"kind": "proportion", "max": 2}}, "fixed range"),
        ({"x": {"kind": "real", "min": 0}}, "needs min and max"),
        ({"x": {"kind": "real", "min": 1, "max": 1}}, "above min"),
        ({"x": {"kind": "real", "min": 0, "max": float("inf")}}, "finite"),
        ({"x": {"kind": "nonnegative", "min": -1}}, "starts at 0"),
        ({"x": {"kind": "proportion", "sensitivity": 0.01}}, "greater than or equal to 1"),
        ({"x": {"kind": "proportion", "weights": True}}, "Extra inputs"),
    ],
)
def test_bad_declarations_are_refused(raw, problem):
    with pytest.raises(ValueError, match=problem):
        parse_declarations(raw)


def test_bits_count_distinguishable_values():
    assert bits(MetricDecl(kind="proportion"), 1000, 4, None) == pytest.approx(math.log2(10_001))
    assert bits(MetricDecl(kind="count"), 1000, 4, None) == pytest.approx(math.log2(1001))
    # Noise coarser than the grid: fewer values can be told apart.
    assert bits(MetricDecl(kind="proportion"), 1000, 4, 0.01) == pytest.approx(math.log2(101))
    assert bits(MetricDecl(kind="proportion"), 1000, 4, 0.01) < bits(MetricDecl(kind="proportion"), 1000, 4, None)
    assert bits(MetricDecl(kind="count"), 10, 4, None, extra_outcomes=2) == pytest.approx(math.log2(13))
