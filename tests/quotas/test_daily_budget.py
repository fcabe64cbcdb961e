"""A partner's daily model rows, counted across jobs, through the API and the real worker."""

import pytest

from tests.factories import CLASSIFICATION, suite_bundle
from tests.harness import worker_harness

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory, demo_files, docker_client):
    yield from worker_harness(
        tmp_path_factory.mktemp("quota"), demo_files, partner_quotas={"acme": {"rows_per_day": 700}}
    )


def test_rows_are_counted_across_jobs_and_refused_when_spent(small_budget):
    s = small_budget
    first = s.run(CLASSIFICATION, ["accuracy"], resources={"query_budget": 600})
    assert first["state"] == "released" and first["result"]["provenance"]["queries"]["rows"] == 600
    # 100 rows are left today: the suite's first 256-row batch is refused, so it fails and uses none
    second = s.run(CLASSIFICATION, ["ece"], resources={"query_budget": 600})  # not the same release
    assert (second["state"], second["error_class"]) == ("failed", "query_budget_exceeded")
    # a job that asks for exactly what is left gets it
    small = s.upload_suite(
        suite_bundle(
            "hundred-rows",
            """
        import evalgate
        x, _ = evalgate.load_dataset()
        evalgate.predict(x[:100])
        evalgate.report({"n": 100})
    """,
            ["n"],
        )
    )
    third = s.run(f"{small['name']}@{small['version']}", ["n"], resources={"query_budget": 600})
    assert third["state"] == "released" and third["result"]["provenance"]["queries"]["rows"] == 100
    # now none are left: refused at admission, with when it resets
    r = s.client.post(
        "/v1/jobs",
        headers=s.partner,
        json={
            "suite": CLASSIFICATION,
            "model": "demo-classifier@1",
            "dataset": "demo-blobs@1",
            "metrics": ["macro_f1"],
        },
    )
    assert r.status_code == 429 and r.json()["error"] == "daily_query_budget_exhausted"
    assert "00:00 UTC" in r.json()["alternatives"][0]
    # another partner is not affected
    assert s.run(CLASSIFICATION, ["accuracy"], headers=s.other)["state"] == "released"

    events = s.events(second["id"])
    reserved = next(e for e in events if e["action"] == "quota.rows_reserved")["data"]
    settled = next(e for e in events if e["action"] == "quota.rows_settled")["data"]
    assert reserved["granted"] == 100 and reserved["rows_per_day"] == 700
    assert settled == {"used": 0, "refunded": 100}


def test_per_job_ceiling_is_the_partners_own(small_budget):
    s = small_budget
    r = s.client.post(
        "/v1/jobs",
        headers=s.other,
        json={
            "suite": CLASSIFICATION,
            "model": "demo-classifier@1",
            "dataset": "demo-blobs@1",
            "metrics": ["accuracy"],
            "resources": {"query_budget": s.settings.max_query_budget + 1},
        },
    )
    assert r.status_code == 422 and r.json()["error"] == "resources_exceed_limit"
