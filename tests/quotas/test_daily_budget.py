"""A partner's daily model rows, counted across jobs, through the API and the real worker."""

import pytest

from tests.factories import CLASSIFICATION
from tests.harness import worker_harness

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory, demo_files, docker_client):
    yield from worker_harness(
        tmp_path_factory.mktemp("quota"), demo_files, partner_quotas={"acme": {"rows_per_day": 700}}
    )


def test_rows_are_counted_across_jobs_charged_as_reserved_and_refused_when_spent(small_budget):
    s = small_budget
    first = s.run(CLASSIFICATION, ["accuracy"], resources={"query_budget": 600})
    assert first["state"] == "released" and s.usage(first["id"])["rows"] == 600
    assert s.budget()["model_rows"]["used"] == 600
    # 100 rows are left today: the job is granted those, the suite's request for all 600 rows is refused,
    # so it fails having used none; still it is charged all 100, because how many of its rows a job
    # uses is its own choice, and a refund of the rest would tell its partner that choice.
    second = s.run(CLASSIFICATION, ["ece"], resources={"query_budget": 600})  # not the same release
    assert (second["state"], second["error_class"]) == ("failed", "query_budget_exceeded")
    assert s.usage(second["id"])["rows"] == 0 and s.budget()["model_rows"]["used"] == 700
    # now none are left: refused at admission, with when it resets
    r = s.post_job(metrics=["macro_f1"])
    assert r.status_code == 429 and r.json()["error"] == "daily_query_budget_exhausted"
    assert "00:00 UTC" in r.json()["alternatives"][0]
    # another partner is not affected
    assert s.run(CLASSIFICATION, ["accuracy"], headers=s.other)["state"] == "released"

    events = s.events(second["id"])
    reserved = next(e for e in events if e["action"] == "quota.rows_reserved")["data"]
    settled = next(e for e in events if e["action"] == "quota.rows_settled")["data"]
    assert reserved["granted"] == 100 and reserved["rows_per_day"] == 700
    assert settled == {"used": 0, "charged": 100, "refunded": 0}


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
