"""Budgets that protect the assets over their lifetime, a cap per release and per metric, and budgets
a partner can read that move only when the partner sees its job end."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.jobs import runner
from service.quotas.models import BudgetReservation
from service.sandbox.spec import Outcome
from tests import factories
from tests.factories import NOISED, suite_bundle, unique
from tests.harness import Harness, harness
from tests.stubs import StubSandbox, context

GATE = dict(dp_mechanism="laplace", leakage_bits_per_day=1e6, release_max_bits=1e6, metric_max_bits=64)


@pytest.fixture
def gate(tmp_path: Path, demo_files) -> Iterator:  # type: ignore[no-untyped-def]
    started = []

    def start(**overrides: object) -> Harness:
        gen = harness(factories.settings(tmp_path / f"data{len(started)}", **{**GATE, **overrides}), demo_files)
        started.append(gen)
        return next(gen)

    yield start
    for gen in started:
        gen.close()


def lifetime(h: Harness, asset: str, resource: str = "bits") -> dict:
    found = [e for e in h.budget()["lifetime"] if e["asset"] == asset and e["resource"] == resource]
    assert len(found) == 1, h.budget()["lifetime"]
    return found[0]


def test_a_partner_takes_at_most_its_lifetime_share_of_a_dataset(gate):
    # demo-blobs@1 (600 rows, 3 classes) holds 600 × log2(3) = 951 label bits; a partner may take 10%.
    h = gate(dataset_lifetime_fraction=0.1, dp_epsilon_budget=100)
    cap = 0.1 * 600 * math.log2(3)
    for i, metric in enumerate(NOISED * 4):
        # Another ε asks the same release again (nothing new); other metrics and outputs are new ones.
        r = h.post_job(metrics=[metric], output="probabilities", epsilon=0.1 + i * 0.001, seed=i)
        if r.status_code == 200:
            continue
        if r.status_code != 202:
            break
    assert r.status_code == 403 and r.json()["error"] == "lifetime_leakage_exhausted", r.text
    assert "dataset demo-blobs@1" in r.json()["detail"]
    entry = lifetime(h, "dataset:demo-blobs@1")
    assert entry["limit"] == pytest.approx(cap, abs=0.01) and entry["used"] <= entry["limit"]
    assert "0.1 × 600 rows × log2(3) label bits" in entry["derivation"]
    # Another partner has its own share; and nothing of the refused job stayed.
    assert h.post_job(headers=h.other, metrics=["accuracy"]).status_code == 202
    assert lifetime(h, "dataset:demo-blobs@1")["used"] == entry["used"]


def test_pooling_caps_what_every_partner_together_takes(gate):
    h = gate(pooled_lifetime_fraction=0.05, dp_epsilon_budget=100)
    codes = []
    for i in range(6):
        headers = h.partner if i % 2 else h.other
        codes.append(h.post_job(headers=headers, metrics=[NOISED[i % len(NOISED)]]).status_code)
    assert 403 in codes and codes.index(403) >= 1  # 5% of 951 bits: a couple of jobs, whoever asks


def test_a_pooled_refusal_never_tells_what_other_partners_have_taken(gate):
    """What is left of a pooled cap moves with every partner's jobs: a refusal (and a dry run's) says
    only that the job does not fit, in the same words whatever the others took meanwhile."""
    h = gate(pooled_lifetime_fraction=0.05, dp_epsilon_budget=100)  # 5% of 951 bits: 47.5 together
    big = {"metrics": NOISED, "output": "probabilities"}  # about 50 bits: never fits
    first = h.post_job(**big)
    assert first.status_code == 403 and first.json()["error"] == "lifetime_leakage_exhausted", first.text
    assert "every partner together" in first.json()["detail"]
    assert h.post_job(headers=h.other, metrics=["accuracy"]).status_code == 202  # the pool moves
    again = h.post_job(**big)
    preview = h.client.post("/v1/jobs", headers=h.partner, params={"dry_run": "true"}, json=factories.job_spec(**big))
    assert again.json()["detail"] == first.json()["detail"] == preview.json()["refusal"]["detail"]
    assert not re.search(r"; [0-9.]+ of the", first.json()["detail"])  # no figure of what is left


def test_a_models_lifetime_rows_are_granted_in_part_then_refused(gate):
    # demo-classifier@1 holds 51 parameters: with 10 rows per parameter and no floor, 510 rows in its life.
    h = gate(model_lifetime_rows_per_parameter=10, model_lifetime_rows_min=1)
    first = h.post_job(metrics=["accuracy"], resources={"query_budget": 400})
    assert first.status_code == 202
    second = h.post_job(metrics=["ece"], resources={"query_budget": 400})
    assert second.status_code == 202  # granted the 110 left
    with h.db() as s:
        assert s.get(BudgetReservation, second.json()["id"]).rows == 110
    third = h.post_job(metrics=["macro_f1"])
    assert third.status_code == 403 and third.json()["error"] == "lifetime_rows_exhausted"
    entry = lifetime(h, "model:demo-classifier@1", "rows")
    assert entry == {**entry, "used": 510.0, "limit": 510.0, "left": 0.0}


def test_one_release_may_carry_at_most_the_cap(gate):
    h = gate(release_max_bits=40)
    r = h.post_job(metrics=NOISED)  # about 49 bits
    assert r.status_code == 422 and r.json()["error"] == "release_exceeds_leakage_cap"
    assert h.post_job(metrics=["accuracy"]).status_code == 202


def test_a_suite_declaring_metrics_too_wide_is_refused_at_upload_and_leaves_nothing(gate):
    h = gate(metric_max_bits=32)
    installed = lambda: sorted(p.name for p in (h.settings.data_dir / "suites").iterdir())
    before = installed()
    bundle = suite_bundle(unique("wide"), "pass", {"secret": {"kind": "real", "min": -1e12, "max": 1e12}})
    r = h.client.post("/v1/suites", headers=h.partner, files={"file": ("s.tar.gz", bundle)})
    assert r.status_code == 422 and r.json()["error"] == "suite_exceeds_leakage_policy"
    assert "secret (real)" in r.json()["detail"]
    assert installed() == before
    names = {s["name"] for s in h.client.get("/v1/suites", headers=h.partner).json()}
    assert not any(n.startswith("wide") for n in names)
    narrow = suite_bundle(unique("narrow"), "pass", {"score": {"kind": "real", "min": -1, "max": 1}})
    assert h.client.post("/v1/suites", headers=h.partner, files={"file": ("s.tar.gz", narrow)}).status_code == 201


def test_what_a_job_gives_back_moves_only_when_its_partner_sees_it_end(gate):
    """A job whose sidecar never came up gets its model rows back, and frees its slot among the jobs
    in progress: not when it really ended, which would tell its partner that time, but at its padded
    completion time."""
    h = gate(timing_buckets_s=[3.0], max_concurrent_jobs=1)
    job = h.post_job(metrics=["accuracy"], resources={"query_budget": 300}).json()
    before = h.budget()
    assert before["model_rows"]["used"] == 300 and before["concurrent_jobs"]["active"] == 1
    runner.run_job(context(h, StubSandbox(Outcome(exit_code=4, sidecar_ready=False))), job["id"])  # ends at once
    shown = h.client.get(f"/v1/jobs/{job['id']}", headers=h.partner).json()
    assert shown["state"] == "running"  # not yet, for its partner
    during = h.budget()
    assert during["model_rows"]["used"] == 300 and during["concurrent_jobs"]["active"] == 1
    assert during["epsilon"] == before["epsilon"] and during["leakage_bits"]["used"] == before["leakage_bits"]["used"]
    assert h.post_job(metrics=["ece"]).json()["error"] == "too_many_concurrent_jobs"
    time.sleep(3.2)
    assert h.client.get(f"/v1/jobs/{job['id']}", headers=h.partner).json()["state"] == "failed"
    after = h.budget()
    assert after["model_rows"]["used"] == 0 and after["concurrent_jobs"]["active"] == 0
    assert after["leakage_bits"]["used"] == 0 and all(e["spent"] == 0 for e in after["epsilon"])
    assert h.post_job(metrics=["ece"]).status_code == 202


def test_a_job_that_ran_keeps_every_row_it_reserved(gate):
    h = gate()
    job = h.post_job(metrics=["accuracy"], resources={"query_budget": 5000}).json()
    used_17 = Outcome(exit_code=1, usage={"rows": 17, "requests": 1})  # it queried 17 rows, then crashed
    runner.run_job(context(h, StubSandbox(used_17)), job["id"])
    time.sleep(h.settings.timing_buckets_s[0] + 0.05)
    assert h.budget()["model_rows"]["used"] == 5000  # the 4983 it left unused would say how many it used
