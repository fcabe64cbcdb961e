"""The release gate end to end: HTTP → Redis → worker → containers → gate, with noise on."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from tests import factories
from tests.factories import CLASSIFICATION, suite_bundle, unique
from tests.harness import worker_harness

pytestmark = [pytest.mark.docker, pytest.mark.redis]
BUCKET_S = 4.0


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, demo_files, docker_client):
    yield from worker_harness(
        tmp_path_factory.mktemp("gate"),
        demo_files,
        dp_mechanism="laplace",
        dp_epsilon_per_metric=0.25,
        dp_epsilon_budget=3.0,
        leakage_bits_per_day=4096,
        timing_buckets_s=[BUCKET_S, 30, 60, 120],
    )


def test_noisy_release_is_typed_signed_charged_and_cached(noisy, expected_demo_accuracy):
    s = noisy
    metrics = ["accuracy", "ece", "log_loss", "macro_f1", "misclassified"]
    job = s.run(CLASSIFICATION, metrics)
    assert job["state"] == "released", job
    released, disclosure = job["result"]["metrics"], job["result"]["disclosure"]
    assert set(released) == set(metrics) and disclosure["suppressed"] == []
    # Noise from OpenDP on every metric (the service computed them from the labels), with its parameters:
    # on the value (sensitivity / n), or on the counts macro F1 is made of.
    assert set(disclosure["noise"]) == set(metrics)
    assert disclosure["noise"]["macro_f1"]["on"] == "counts" and disclosure["noise"]["macro_f1"]["sensitivity"] == 4
    acc = disclosure["noise"]["accuracy"]
    assert acc["mechanism"] == "laplace" and acc["epsilon"] == 0.25 and acc["sensitivity"] == pytest.approx(1 / 600)
    assert acc["scale"] == pytest.approx(1 / 600 / 0.25)
    assert abs(released["accuracy"] - expected_demo_accuracy) < 40 * acc["scale"]
    assert 0 <= released["accuracy"] <= 1 and 0 <= released["ece"] <= 1
    assert released["misclassified"] == int(released["misclassified"]) and 0 <= released["misclassified"] <= 600
    assert released["log_loss"] == round(released["log_loss"], 4)

    # ε and bits are accounted: ε at admission, bits reserved then settled to what the release carried.
    b = s.client.get("/v1/budget", headers=s.partner).json()
    assert b["epsilon"] == [{"dataset": "demo-blobs@1", "spent": 1.25, "budget": 3.0, "left": 1.75}]
    trail = {e["action"]: e["data"] for e in s.events(job["id"])}
    assert (
        trail["leakage.bits_settled"]["bits"] == trail["leakage.bits_reserved"]["bits"] == job["spec"]["leakage_bits"]
    )
    assert disclosure["bits"] == job["spec"]["leakage_bits"]
    assert b["leakage_bits"]["used"] == pytest.approx(job["spec"]["leakage_bits"], abs=0.01)
    assert trail["result.released"]["disclosure"] == disclosure

    # Asked again (another seed, another ε): the earlier release, not fresh noise, and nothing spent.
    again = s.client.post(
        "/v1/jobs",
        headers=s.partner,
        json={
            "suite": CLASSIFICATION,
            "model": "demo-classifier@1",
            "dataset": "demo-blobs@1",
            "metrics": list(reversed(metrics)),
            "seed": 99,
            "epsilon": 0.5,
        },
    )
    assert again.status_code == 200 and again.json()["reused"]
    assert again.json()["id"] == job["id"] and again.json()["result"]["metrics"] == released
    assert s.client.get("/v1/budget", headers=s.partner).json()["epsilon"][0]["spent"] == 1.25


def test_small_cells_are_withheld_and_out_of_range_values_rejected(noisy):
    s = noisy
    suite = s.upload_suite(
        suite_bundle(
            unique("cells"),
            """
        import evalgate
        evalgate.report({
            "overall": 0.75,
            "subgroup": evalgate.metric(0.5, n=12),
            "per_class": evalgate.metric(0.6, n=600, min_class_n=7),
            "errors": evalgate.metric(3, n=30),
        })
    """,
            {
                "overall": "proportion",
                "subgroup": "proportion",
                "per_class": {"kind": "proportion", "per_class": True},
                "errors": "count",
            },
        )
    )
    job = s.run(f"{suite['name']}@{suite['version']}", ["overall", "subgroup", "per_class", "errors"])
    assert job["state"] == "released", job
    result = job["result"]
    assert set(result["metrics"]) == {"overall"}
    assert result["disclosure"]["suppressed"] == [
        {"metric": "errors", "reason": "computed on fewer than 50 rows"},
        {"metric": "per_class", "reason": "a class has fewer than 20 rows"},
        {"metric": "subgroup", "reason": "computed on fewer than 50 rows"},
    ]

    bad = s.upload_suite(
        suite_bundle(
            unique("range"),
            """
        import evalgate
        evalgate.report({"accuracy": 1.5})
    """,
            {"accuracy": "proportion"},
        )
    )
    job = s.run(f"{bad['name']}@{bad['version']}", ["accuracy"])
    assert (job["state"], job["error_class"], job["result"]) == ("rejected", "output_rejected", None)


def test_partners_see_padded_completion_times(noisy):
    s = noisy
    suite = s.upload_suite(
        suite_bundle(
            unique("quick"),
            """
        import evalgate
        evalgate.report({"overall": 0.5})
    """,
            {"overall": "proportion"},
        )
    )
    job = s.submit(f"{suite['name']}@{suite['version']}", ["overall"])
    created = datetime.fromisoformat(job["created_at"].replace("Z", "+00:00"))
    # The operator sees the real end first; the partner still sees it running until the bucket ends.
    deadline = time.monotonic() + 60
    while s.client.get(f"/v1/jobs/{job['id']}", headers=s.operator).json()["state"] != "released":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    real = s.client.get(f"/v1/jobs/{job['id']}", headers=s.operator).json()
    real_end = datetime.fromisoformat(real["finished_at"].replace("Z", "+00:00"))
    assert real_end - created < timedelta(seconds=BUCKET_S)
    seen = s.client.get(f"/v1/jobs/{job['id']}", headers=s.partner).json()
    assert (seen["state"], seen["finished_at"], seen["result"], seen["started_at"]) == ("running", None, None, None)
    listed = s.client.get("/v1/jobs", headers=s.partner, params={"state": "released"}).json()["jobs"]
    assert job["id"] not in [j["id"] for j in listed]
    done = s.wait(job["id"])
    assert done["state"] == "released"
    assert datetime.fromisoformat(done["finished_at"].replace("Z", "+00:00")) - created == timedelta(seconds=BUCKET_S)
    assert done["result"]["provenance"]["completed_within_s"] == BUCKET_S
    assert "started_at" not in done["result"]["provenance"] and "finished_at" not in done["result"]["provenance"]


def test_a_cancel_asked_before_the_padded_end_is_what_the_partner_sees(noisy):
    """Whether a job had already ended when its partner asked to cancel it would say when it ended:
    so a cancel asked before the padded end always shows as cancelled, and never a release."""
    s = noisy
    suite = s.upload_suite(
        suite_bundle(unique("late"), "import evalgate\nevalgate.report({'overall': 0.5})\n", {"overall": "proportion"})
    )
    job = s.submit(f"{suite['name']}@{suite['version']}", ["overall"])
    deadline = time.monotonic() + 60
    while s.client.get(f"/v1/jobs/{job['id']}", headers=s.operator).json()["state"] != "released":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answer = s.client.post(f"/v1/jobs/{job['id']}/cancel", headers=s.partner).json()
    assert answer["state"] == "running"  # as for a job still running
    done = s.wait(job["id"])
    assert (done["state"], done["error_class"], done["result"]) == ("cancelled", "cancelled", None)
    assert s.client.get(f"/v1/jobs/{job['id']}", headers=s.operator).json()["state"] == "released"
    # Asked again, it is a new question for its partner, as for any job it saw cancelled (whether this
    # one had really released is what the cancel hides): charged anew, its release never shown to it.
    spec = factories.job_spec(suite=f"{suite['name']}@{suite['version']}", metrics=["overall"])
    again = s.client.post("/v1/jobs", headers=s.partner, params={"dry_run": "true"}, json=spec).json()
    assert again["reuses"] is None and again["cost"]["epsilon_total"] > 0, again
