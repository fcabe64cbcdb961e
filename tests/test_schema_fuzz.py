"""The API fuzzed from its own OpenAPI document (schemathesis, in process over ASGI, no network): with
an operator's, a partner's and a researcher's key, on every operation, no answer is a 5xx, and every
answer's status, content type and body are ones the document declares for that operation (an error's
code included: service/openapi.py narrows each status to the codes a route can give).

Each operation gets its own examples, random valid and invalid requests, and requests that name what
is really there (the demo model and dataset, the built-in suite, a partner's job), so answers about
real rows are checked too; jobs are recorded, never run. Bounded and reproducible: a fixed number of
examples, derandomized, no shrinking (a failure is reported as found)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi import schemas as _openapi_schemas  # noqa: F401  # imported here, at the top
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.main import create_app
from tests import factories
from tests.harness import Harness, RecordingDispatcher

ROLES = ("operator", "partner", "researcher")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
REPORTED_CHARS = 4000  # of each failure: a reproduction with an uploaded file runs to megabytes
BOUNDED = settings(
    max_examples=25,  # per operation, role and kind of request: the whole run takes seconds on two cores
    derandomize=True,  # the same requests every run
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    # generated requests are often large, slow to make or filtered (bodies that cannot be sent): by design
    suppress_health_check=[
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
    ],
    print_blob=False,
)


@dataclass
class Fuzzed:
    schema: schemathesis.BaseSchema
    keys: dict[str, dict[str, str]]
    real: dict[str, list[dict[str, Any]]]  # per operation, requests about real rows


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, demo_files: dict[str, Path]) -> Iterator[Fuzzed]:
    settings_ = factories.settings(tmp_path_factory.mktemp("fuzz") / "data")
    app = create_app(settings_, dispatcher=RecordingDispatcher(settings_))
    # Loading the document starts the app (its lifespan) in schemathesis's own event loop; every
    # request below, the harness's included, goes through the same in-process ASGI client.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        with asgi.get_client(app) as client:
            h = Harness(client, settings_, None)  # a requests-style client is all the harness needs
            h.register_demo(demo_files)
            job = h.post_job(metrics=["accuracy"])
            assert job.status_code == 202, job.text
        keys = {"operator": h.operator, "partner": h.partner, "researcher": h.researcher}
        yield Fuzzed(schema, keys, real_rows(demo_files, job.json()["id"]))
    finally:
        asgi.shutdown_lifespans()


def real_rows(demo_files: dict[str, Path], job_id: str) -> dict[str, list[dict[str, Any]]]:
    """Per operation, requests (as `as_strategy` arguments) that name what is really there: the demo
    model and dataset (again, as a new version, and other bytes under their name), the built-in suite,
    suites to upload, the partner's job."""
    model, data = demo_files["model"].read_bytes(), demo_files["data"].read_bytes()
    builtin_suite = dict(zip(("name", "version"), factories.CLASSIFICATION.split("@"), strict=True))
    # the built-in suite, and the partner's own uploads (made by the suite uploads below, as it runs first)
    suite = [
        {"path_parameters": {"owner": "evalgate", **builtin_suite}},
        {"path_parameters": {"owner": "acme", "name": "fuzz-rows", "version": "1.0.0"}},
        {"path_parameters": {"owner": "acme", "name": "fuzz-metrics", "version": "1.0.0"}},
    ]
    new_model = {"name": "demo-classifier", "version": "2"}  # registered by the model uploads below
    job = [{"path_parameters": {"job_id": job_id}}]
    slices = {"old": [{"feature": 3, "op": ">=", "value": 0.5}]}
    rows_code = "import numpy as np\nnp.savez('/out/rows.npz', labels=np.zeros(1))\n"
    return {
        "POST /v1/models": [
            {"body": {"name": "demo-classifier", "version": version, "file": content}}
            for version, content in (("1", model), ("2", model), ("1", data))
        ],
        "POST /v1/datasets": [
            {"body": {"name": "demo-blobs", "version": version, "file": content}}
            for version, content in (("1", data), ("2", data), ("1", model))
        ],
        "POST /v1/suites": [
            {"body": {"file": factories.rows_bundle("fuzz-rows", rows_code)}},
            {"body": {"file": factories.suite_bundle("fuzz-metrics", "print(1)", ["score"])}},
            {"body": {"file": factories.suite_bundle("classification", "print(1)", ["score"])}},
        ],
        "POST /v1/jobs": [
            {"body": factories.job_spec(metrics=["accuracy"], seed=1)},
            {"body": factories.job_spec(metrics=factories.CLASSIFICATION_METRICS, epsilon=1.0)},
            {"body": factories.job_spec(metrics=["accuracy@old", "macro_f1"], slices=slices)},
        ],
        "GET /v1/jobs/{job_id}": job,
        "POST /v1/jobs/{job_id}/cancel": job,
        "POST /v1/models/{name}/{version}/status": [
            {"path_parameters": new_model},
            *({"path_parameters": new_model, "body": {"status": s}} for s in ("deprecated", "active", "retired")),
        ],
        "POST /v1/suites/{owner}/{name}/{version}/publish": suite,
        "POST /v1/suites/{owner}/{name}/{version}/unpublish": suite,
        "POST /v1/suites/{owner}/{name}/{version}/approve": suite,
        "GET /v1/budget": [{"query": {"partner": "acme"}}, {"query": {"partner": "globex"}}],
    }


def _fuzz(fuzzed: Fuzzed, operation: schemathesis.APIOperation, key: dict[str, str]) -> None:
    """The operation's examples, random valid and invalid requests, then requests about real rows."""
    examples = operation.get_strategies_from_examples()
    kinds = [st.one_of(examples)] if examples else []
    kinds.append(
        st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    )
    real = fuzzed.real.get(operation.label, [])
    if real:
        kinds.append(st.one_of([operation.as_strategy(**given_) for given_ in real]))
    for strategy in kinds:

        @BOUNDED
        @given(case=strategy)
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=key)
            case.validate_response(response, checks=CHECKS, headers=key)

        check()


@pytest.mark.parametrize("role", ROLES)
def test_every_answer_is_one_the_schema_declares(fuzzed: Fuzzed, role: str) -> None:
    failures = []
    for result in fuzzed.schema.get_all_operations():
        operation = result.ok()
        try:
            _fuzz(fuzzed, operation, fuzzed.keys[role])
        except (Exception, FailureGroup) as e:  # every operation is fuzzed; all failures are reported together
            failures.append(f"{operation.label}:\n{str(e)[:REPORTED_CHARS]}")
    if failures:
        pytest.fail(f"{len(failures)} operations failed as {role}:\n\n" + "\n\n".join(failures), pytrace=False)
