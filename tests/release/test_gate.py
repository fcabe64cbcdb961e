import pytest

from service.release.gate import OutputRejected, parse_result, release_values, round_significant

REQ = ["accuracy", "log_loss"]


def parse(raw: bytes | str, requested=REQ, max_bytes=1024, max_metrics=8):
    return parse_result(raw.encode() if isinstance(raw, str) else raw, requested, max_bytes=max_bytes,
                        max_metrics=max_metrics)


def test_accepts_exactly_the_requested_finite_numbers():
    assert parse('{"accuracy": 0.9, "log_loss": 3}') == {"accuracy": 0.9, "log_loss": 3.0}


@pytest.mark.parametrize("raw, reason", [
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
    ('{"accuracy": {"x": 1}, "log_loss": 1}', "not a number"),
    ('[0.9, 1]', "not a JSON object"),
    ('0.9', "not a JSON object"),
    ('{"accuracy": 0.9, "log_loss": 1', "not valid JSON"),
    ("", "not valid JSON"),
    ('[' * 100_000 + ']' * 100_000, "not valid JSON"),
])
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


@pytest.mark.parametrize("value, digits, expected", [
    (0.123456789, 4, 0.1235), (123456.789, 3, 123000.0), (-0.000123456, 2, -0.00012), (0.0, 4, 0.0), (1.0, 1, 1.0),
])
def test_round_significant(value, digits, expected):
    assert round_significant(value, digits) == expected


def test_released_values_carry_no_more_digits_than_configured():
    out = release_values({"b": 0.987654321, "a": 1 / 3}, 3)
    assert out == {"a": 0.333, "b": 0.988} and list(out) == ["a", "b"]
