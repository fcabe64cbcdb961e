"""Dataset rows by reference in the real sandbox, under runc and gVisor: a job's predictions on rows
of its dataset (a slice, an index, a mask) are exactly those of the same rows sent by value, and
charged exactly the same (rows, and one request per batch)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import suite_bundle, unique
from tests.harness import Harness, unavailable, worker_harness

pytestmark = [pytest.mark.docker, pytest.mark.redis]

SUITE = """
import numpy as np
import evalgate
x = evalgate.load_features()
idx = np.arange(0, len(x), 3)[:200]
mask = np.zeros(len(x), bool)
mask[::5] = True
named = [evalgate.predict(x[100:400], batch_size=64), evalgate.predict(x[idx], batch_size=50),
         evalgate.predict(x[mask], batch_size=32)]
sent = [evalgate.predict(np.array(x[100:400]), batch_size=64), evalgate.predict(np.array(x)[idx], batch_size=50),
        evalgate.predict(np.array(x)[mask], batch_size=32)]
same = all(np.array_equal(a, b) for a, b in zip(named, sent))
try:  # an honest mistake, refused by the SDK before it reaches the sidecar (no protocol abuse counted)
    evalgate.predict(x[:4], batch_size=-1)
    refused = False
except ValueError:
    refused = True
evalgate.report({"score": 1.0 if same and refused else 0.0})
"""


@pytest.fixture(scope="module", params=["runc", "runsc"])
def runtime_stack(request, tmp_path_factory, demo_files: dict[str, Path], docker_client) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    from service.sandbox.runtimes import runsc_available

    if request.param == "runsc" and not runsc_available(docker_client):
        unavailable("gVisor", "the engine lacks the evalgate runsc runtimes: run `evalgate sandbox setup`")
    yield from worker_harness(
        tmp_path_factory.mktemp(f"rows-{request.param}"), demo_files, docker_runtime=request.param
    )


def test_rows_named_are_answered_and_charged_as_rows_sent(runtime_stack: Harness) -> None:
    h = runtime_stack
    suite = h.upload_suite(suite_bundle(unique("rows"), SUITE, {"score": "proportion"}))
    job = h.run(f"{suite['name']}@{suite['version']}", ["score"], resources={"query_budget": 2000})
    assert job["state"] == "released", h.operator_log(job["id"])[-3000:]
    assert job["result"]["metrics"]["score"] == 1.0
    usage = h.usage(job["id"])
    per_pass_rows = 300 + 200 + 120  # the slice, the index, the mask
    per_pass_requests = 5 + 4 + 4  # ceil(300/64), ceil(200/50), ceil(120/32)
    assert (usage["rows"], usage["requests"]) == (2 * per_pass_rows, 2 * per_pass_requests)
    assert usage["protocol_errors"] == 0
