import pytest

from service.release.catalogue import MetricDecl
from service.release.gate import OutputRejected, Reported, parse_result

WIDE = MetricDecl(kind="real", min=-1e9, max=1e9)
REQ = {"accuracy": MetricDecl(kind="proportion"), "log_loss": MetricDecl(kind="nonnegative", max=30)}


def parse(raw: bytes | str, requested=REQ, max_bytes=1024, max_metrics=8, rows=1000):
    if isinstance(requested, list):
        requested = {m: WIDE for m in requested}
    return parse_result(
        raw.encode() if isinstance(raw, str) else raw,
        requested,
        dataset_rows=rows,
        max_bytes=max_bytes,
        max_metrics=max_metrics,
    )


def test_accepts_exactly_the_requested_finite_numbers():
    assert parse('{"accuracy": 0.9, "log_loss": 3}') == {
        "accuracy": Reported(0.9, 1000),
        "log_loss": Reported(3.0, 1000),
    }


def test_an_entry_carries_its_rows():
    out = parse('{"accuracy": {"value": 0.5, "n": 60, "min_class_n": 25}, "log_loss": 1}')
    assert out["accuracy"] == Reported(0.5, 60, 25)


@pytest.mark.parametrize(
    "raw, reason",
    [
        ('{"accuracy": NaN, "log_loss": 1}', "non-finite"),
        ('{"accuracy": Infinity, "log_loss": 1}', "non-finite"),
        ('{"accuracy": -Infinity, "log_loss": 1}', "non-finite"),
        ('{"accuracy": 1e999, "log_loss": 1}', "not finite"),
        ('{"accuracy": 0.1, "accuracy": 0.9, "log_loss": 1}', "duplicate"),
        ('{"accuracy": 0.1, "log_loss": 1, "weights_0": 0.5}', "undeclared"),
        ('{"accuracy": 0.1}', "missing"),
        ('{"accuracy": "0.9", "log_loss": 1}', "not a number"),
        ('{"accuracy": true, "log_loss": 1}', "not a number"),
        ('{"accuracy": null, "log_loss": 1}', "not a number"),
        ('{"accuracy": [0.9], "log_loss": 1}', "not a number"),
        ('{"accuracy": {"x": 1}, "log_loss": 1}', "'value' and optionally"),
        ('{"accuracy": {"value": 0.5, "n": 2000}, "log_loss": 1}', "n must be a whole number in [0, 1000]"),
        ('{"accuracy": {"value": 0.5, "n": 1.5}, "log_loss": 1}', "n must be a whole number"),
        ('{"accuracy": {"value": 0.5, "n": 100, "min_class_n": 101}, "log_loss": 1}', "min_class_n must be"),
        ('{"accuracy": 1.01, "log_loss": 1}', "outside its kind proportion"),
        ('{"accuracy": -0.01, "log_loss": 1}', "outside its kind proportion"),
        ('{"accuracy": 0.5, "log_loss": 31}', "outside its kind nonnegative"),
        ("[0.9, 1]", "not a JSON object"),
        ("0.9", "not a JSON object"),
        ('{"accuracy": 0.9, "log_loss": 1', "not valid JSON"),
        ("", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_rejects(raw, reason):
    with pytest.raises(OutputRejected) as e:
        parse(raw, max_bytes=1 << 20)
    assert reason in e.value.reason


def test_rejects_non_utf8():
    with pytest.raises(OutputRejected, match="UTF-8"):
        parse(b'{"accuracy": 0.9, "log_loss": "\xff\xfe"}')


def test_rejects_over_size_before_parsing():
    with pytest.raises(OutputRejected, match="larger"):
        parse('{"accuracy": 0.9, "log_loss": 1}' + " " * 2000)


def test_rejects_too_many_metrics():
    names = [f"m{i}" for i in range(10)]
    raw = "{" + ",".join(f'"{n}": 1' for n in names) + "}"
    with pytest.raises(OutputRejected, match="more than 8"):
        parse(raw, requested=names)


def test_huge_integer_is_refused_not_crashing():
    with pytest.raises((OutputRejected, OverflowError)):
        parse('{"accuracy": ' + "9" * 400 + ', "log_loss": 1}')


def test_a_number_too_large_for_a_float_is_rejected_by_the_gate_itself():
    decls = {"score": MetricDecl(kind="real", min=-1, max=1)}
    with pytest.raises(OutputRejected, match="too large"):
        parse_result(b'{"score": ' + b"9" * 400 + b"}", decls, dataset_rows=100, max_bytes=1 << 16, max_metrics=8)
