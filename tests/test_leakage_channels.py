"""Each channel a hostile partner could use to carry what its job learned out, attacked end to end
(HTTP → Redis → worker → containers): the job encodes a known secret in it, and what its partner can
then observe carries no more than the bits charged for it."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.factories import CLASSIFICATION, suite_bundle, unique
from tests.harness import Harness, worker_harness

pytestmark = [pytest.mark.docker, pytest.mark.redis]
BUCKET_S = 5.0


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, demo_files, docker_client) -> Harness:  # type: ignore[no-untyped-def]
    yield from worker_harness(
        tmp_path_factory.mktemp("channels"),
        demo_files,
        dp_mechanism="laplace",
        dp_epsilon_budget=100.0,
        timing_buckets_s=[BUCKET_S, 30],
        metric_max_bits=32,
        release_max_bits=256,
    )


def test_the_rows_a_job_reports_reach_its_partner_only_as_a_charged_coarse_choice(hostile):
    """The noise disclosed with a release is calibrated to the rows a metrics-mode job says it used:
    a job encoding a 9-bit secret in that count gets out only which of 11 calibrations it chose."""
    secret = 0b101101011
    suite = hostile.upload_suite(
        suite_bundle(
            unique("nchannel"),
            f"""
        import evalgate
        evalgate.report({{"score": evalgate.metric(0.5, n=600 - {secret})}})
    """,
            {"score": "proportion"},
        )
    )
    job = hostile.run(f"{suite['name']}@{suite['version']}", ["score"])
    noise = job["result"]["disclosure"]["noise"]["score"]
    assert 1 / noise["sensitivity"] == 128  # 600 - 363 = 237 rows: the power of two below, not 237
    # What the choice can carry is in the bits reserved and charged for the job.
    assert job["spec"]["leakage_bits"] >= math.log2((600).bit_length() + 1)


_RANDOM = re.compile(r"[0-9a-f]{64}|[0-9a-f]{8}-[0-9a-f-]{27}|\d{4}-\d\d-\d\dT[0-9:.+-]+Z?")


def _numbers(value: object) -> set[float]:
    """Every number a partner reads in `value`: its numeric leaves, and the numbers in its strings
    once digests, ids and timestamps are taken out; a clock (`resets_in_s`) is not a value."""
    found: set[float] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "resets_in_s":
                found |= _numbers(v)
    elif isinstance(value, list):
        for v in value:
            found |= _numbers(v)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int | float):
        found.add(float(value))
    elif isinstance(value, str):
        found |= {float(n) for n in re.findall(r"\d+(?:\.\d+)?", _RANDOM.sub(" ", value))}
    return found


def test_how_many_rows_a_job_queries_reaches_its_partner_nowhere(hostile):
    """A job that queries a secret number of rows: the provenance does not say it, and its partner's
    model-row budget is charged what the job reserved, not what it used."""
    secret = 137
    suite = hostile.upload_suite(
        suite_bundle(
            unique("rowschannel"),
            f"""
        import evalgate
        x, _ = evalgate.load_dataset()
        evalgate.predict(x[:{secret}])
        evalgate.report({{"score": 0.5}})
    """,
            {"score": "proportion"},
        )
    )
    before = hostile.budget()["model_rows"]["used"]
    job = hostile.run(f"{suite['name']}@{suite['version']}", ["score"], resources={"query_budget": 1000})
    assert job["state"] == "released"
    assert hostile.usage(job["id"])["rows"] == secret  # the operator sees it
    assert "queries" not in job["result"]["provenance"]
    # Nowhere as a value; digests, ids, times and clocks are left out (their digits hold "137" by chance).
    assert secret not in _numbers([job, hostile.budget()])
    assert hostile.budget()["model_rows"]["used"] == before + 1000


def test_a_jobs_real_end_reaches_its_partner_nowhere_before_its_padded_time(hostile):
    """A job that ends at once: its state, its budget effects and its slot among the jobs in progress
    all stay as they were until the padded time."""
    suite = hostile.upload_suite(
        suite_bundle(unique("quick"), "import evalgate\nevalgate.report({'score': 0.5})\n", {"score": "proportion"})
    )
    job = hostile.submit(f"{suite['name']}@{suite['version']}", ["score"])
    created = time.monotonic()
    seen_states, seen_active = set(), set()
    while True:
        operator_view = hostile.client.get(f"/v1/jobs/{job['id']}", headers=hostile.operator).json()
        partner_view = hostile.client.get(f"/v1/jobs/{job['id']}", headers=hostile.partner).json()
        elapsed = time.monotonic() - created
        if elapsed < BUCKET_S - 0.5:
            seen_states.add(partner_view["state"])
            seen_active.add(hostile.budget()["concurrent_jobs"]["active"])
        if partner_view["state"] == "released":
            break
        assert elapsed < 30
        time.sleep(0.2)
    assert operator_view["state"] == "released"  # it really ended well before
    assert seen_states == {"running"} and seen_active == {1}
    assert elapsed >= BUCKET_S - 0.5 and hostile.budget()["concurrent_jobs"]["active"] == 0


def test_an_output_policy_keeps_full_precision_probabilities_from_the_job(hostile, tmp_path):
    """A model registered with probabilities rounded to 2 digits: no finer digit reaches the job, so
    none can leave with its result (a logistic model is no longer solved from a few dozen rows)."""
    w = np.random.default_rng(5).normal(size=(16, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["z"]),
            helper.make_node("Softmax", ["z"], ["probabilities"], axis=1),
        ],
        "rounded",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    r = hostile.client.post(
        "/v1/models",
        headers=hostile.operator,
        data={"name": "rounded-model", "version": "1", "output_policy": "rounded:2"},
        files={"file": ("m.onnx", model.SerializeToString())},
    )
    assert r.status_code == 201 and r.json()["output_policy"] == {"kind": "rounded", "digits": 2}
    suite = hostile.upload_suite(
        suite_bundle(
            unique("digits"),
            """
        import numpy as np, evalgate
        x, _ = evalgate.load_dataset()
        p = evalgate.predict(x[:300]).astype(np.float64)
        finer = int(np.sum(np.abs(p * 100 - np.round(p * 100)) > 1e-3))
        evalgate.report({"finer_digits": finer})
    """,
            {"finer_digits": "count"},
        )
    )
    job = hostile.run(f"{suite['name']}@{suite['version']}", ["finer_digits"], model="rounded-model@1")
    assert job["state"] == "released", hostile.operator_log(job["id"])
    noise = job["result"]["disclosure"]["noise"]["finer_digits"]
    assert abs(job["result"]["metrics"]["finer_digits"]) <= 40 * noise["scale"]  # 0 plus noise, not 900
    assert job["result"]["provenance"]["model"]["output_policy"] == {"kind": "rounded", "digits": 2}
    # The built-in suite reads the rounded scores too (projected, as they no longer sum to 1 exactly).
    builtin = hostile.run(CLASSIFICATION, ["accuracy"], model="rounded-model@1")
    assert builtin["state"] == "released", hostile.operator_log(builtin["id"])
    assert builtin["result"]["provenance"]["rows"]["strict"] is False
