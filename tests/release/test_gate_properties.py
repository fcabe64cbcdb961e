"""Property tests: whatever a job writes, nothing outside a kind's range, no undeclared name and no
value off the grid ever leaves the gate."""

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.release.catalogue import MetricDecl, grid
from service.release.gate import OutputRejected, Policy, parse_result, release

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@st.composite
def declarations(draw):
    kind = draw(st.sampled_from(["proportion", "count", "nonnegative", "real"]))
    extra = {}
    if kind == "nonnegative":
        extra["max"] = draw(st.floats(0.5, 1e6))
    if kind == "real":
        lo = draw(st.floats(-1e6, 1e6))
        extra.update(min=lo, max=lo + draw(st.floats(0.5, 1e6)))
    if kind in ("proportion", "count"):
        extra["sensitivity"] = draw(st.floats(1, 10))
        extra["per_class"] = draw(st.booleans())
    return MetricDecl(kind=kind, **extra)


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.floats(-2, 2),
    st.integers(-5, 2000),
)
JUNK = st.recursive(
    st.none() | st.booleans() | st.text(max_size=5) | NUMBERS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
ENTRY = st.one_of(
    NUMBERS,
    st.fixed_dictionaries(
        {"value": NUMBERS}, optional={"n": st.integers(-5, 3000) | JUNK, "min_class_n": st.integers(-5, 3000)}
    ),
    JUNK,
)


@st.composite
def scenario(draw):
    decls = draw(st.dictionaries(NAMES, declarations(), min_size=1, max_size=5))
    names = list(decls) + draw(st.lists(NAMES, max_size=2))  # sometimes undeclared names too
    written = {n: draw(ENTRY) for n in draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))}
    raw = draw(
        st.one_of(
            st.just(json.dumps(written, allow_nan=True)), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))
        )
    )
    policy = Policy(
        decimals=draw(st.integers(0, 6)),
        min_rows=draw(st.integers(1, 200)),
        min_class_rows=draw(st.integers(1, 50)),
        mechanism=draw(st.sampled_from([None, "laplace", "gaussian"])),
    )
    return decls, raw.encode("utf-8", "surrogatepass"), policy, draw(st.integers(1, 2000)), draw(st.floats(0.01, 2))


def _released_or_rejected(decls, raw, policy, rows, eps):
    try:
        reported = parse_result(raw, decls, dataset_rows=rows, max_bytes=1 << 16, max_metrics=32)
    except (OutputRejected, OverflowError):
        return None, None
    return reported, release(reported, decls, epsilon=eps, policy=policy)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_nothing_out_of_range_undeclared_or_off_grid(case):
    decls, raw, policy, rows, eps = case
    reported, out = _released_or_rejected(decls, raw, policy, rows, eps)
    if out is None:
        return
    assert set(reported) == set(decls)  # exactly the declared names, or nothing at all
    assert set(out.metrics) | {s["metric"] for s in out.suppressed} == set(decls)
    assert not set(out.metrics) & {s["metric"] for s in out.suppressed}
    for name, value in out.metrics.items():
        d, r = decls[name], reported[name]
        lo, hi = d.bounds(r.n)
        assert math.isfinite(value) and lo <= value <= hi, (name, value, lo, hi)
        step = grid(d, policy.decimals)
        on_grid = abs(value / step - round(value / step)) < 1e-6 or value in (lo, hi)
        assert on_grid, (name, value, step)
        if d.integer:
            assert value == int(value)
        assert r.n >= policy.min_rows and (not d.per_class or r.min_class_n >= policy.min_class_rows)
    assert set(out.noise) <= set(out.metrics)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, declarations(), min_size=1, max_size=4), st.data())
def test_valid_results_are_never_rejected(decls, data):
    """The converse: every in-range value of the right shape gets through (withheld at worst)."""
    rows = data.draw(st.integers(1, 2000))
    written = {}
    for name, d in decls.items():
        lo, hi = d.bounds(rows)
        value = float(data.draw(st.integers(int(lo), int(hi)))) if d.integer else data.draw(st.floats(lo, hi))
        written[name] = {"value": value, "n": rows, "min_class_n": data.draw(st.integers(0, rows))}
    reported = parse_result(json.dumps(written).encode(), decls, dataset_rows=rows, max_bytes=1 << 16, max_metrics=32)
    out = release(reported, decls, epsilon=0.5, policy=Policy())
    assert set(out.metrics) | {s["metric"] for s in out.suppressed} == set(decls)
