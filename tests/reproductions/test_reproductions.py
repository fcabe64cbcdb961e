"""Reproductions through the real API and the real runner on the real database and budgets, with a
stub sandbox (no Docker; tests/reproductions/test_in_the_sandbox.py runs real containers): outcomes,
who may ask, who is charged, the transparency log, a worker that dies, what a partner sees."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from service.canonical import canonical_json, sha256_hex
from service.db import utcnow
from service.jobs import runner
from service.jobs.models import Job
from service.jobs.recovery import Recovery
from service.jobs.states import JobState
from service.quotas.models import BudgetReservation
from service.registry import storage
from service.release import service as release_service
from service.release.models import Result
from service.reproductions.models import Reproduction
from service.sandbox.errors import ImageMissing
from service.sandbox.spec import Outcome
from service.transparency import service as tlog
from tests import factories
from tests.harness import Harness, harness
from tests.stubs import StubSandbox, context, past_its_padding, released_outcome, rows_file


@pytest.fixture(scope="module")
def GOOD(demo_files) -> Outcome:
    return released_outcome(demo_files["data"])


def released(api: Harness, good: Outcome) -> str:
    r = api.post_job(metrics=["accuracy", "macro_f1"], resources={"query_budget": 1000})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    assert runner.run_job(context(api, StubSandbox(good)), job_id) == JobState.RELEASED
    time.sleep(api.settings.timing_buckets_s[-1] + 0.05)  # reproducible once its partner sees it released
    return job_id


def reproduce(api: Harness, job_id: str, headers: dict[str, str] | None = None) -> dict:
    r = api.client.post(f"/v1/jobs/{job_id}/reproduce", headers=headers or api.operator)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def reproductions(api: Harness, job_id: str, headers: dict[str, str] | None = None) -> list[dict]:
    r = api.client.get(f"/v1/jobs/{job_id}/reproductions", headers=headers or api.operator)
    assert r.status_code == 200, r.text
    return r.json()["reproductions"]  # type: ignore[no-any-return]


def log_size(api: Harness) -> int:
    with api.db() as s:
        return tlog.size(s)


def partner_budget(api: Harness) -> dict:
    b = api.budget()
    return {
        "rows": b["model_rows"]["used"],
        "bits": b["leakage_bits"]["used"],
        "epsilon": b["epsilon"],
        "jobs": b["concurrent_jobs"]["active"],
        "releases": b["releases"]["left"],
        "lifetime": b["lifetime"],
    }


def test_a_released_job_reproduces_charged_to_the_operator_and_logged(api, GOOD):
    job_id = released(api, GOOD)
    time.sleep(api.settings.timing_buckets_s[-1] + 0.05)  # the partner's budgets have settled
    before = api.client.get(f"/v1/jobs/{job_id}", headers=api.operator).json()
    partner_before, size_before = partner_budget(api), log_size(api)

    asked = reproduce(api, job_id)
    assert asked["outcome"] is None and asked["requested_by"] == "ops" and asked["requester_role"] == "operator"
    run_id = asked["id"]
    assert (run_id, JobState.QUEUED) in api.dispatcher.enqueued  # handed over after its commit
    sandbox = StubSandbox(GOOD)
    assert runner.run_job(context(api, sandbox), run_id) == JobState.COMPARED
    # The original's spec, seed and budget, the original's images, in a sandbox named for the run.
    spec = sandbox.runs[0]
    assert spec.job_id == run_id and spec.query_budget_rows == 1000
    assert (spec.job_image, spec.sidecar_image) == ("sha256:sha256:job", "sha256:sha256:sidecar")
    assert spec.env["EVALGATE_SEED"] == str(before["spec"]["seed"])
    assert run_id in sandbox.removed

    [seen] = reproductions(api, job_id)
    assert (seen["id"], seen["outcome"], seen["reason"], seen["error_class"]) == (run_id, "reproduced", None, None)
    # One new leaf, a commitment to the record shown with the reproduction.
    assert log_size(api) == size_before + 1 == seen["log"]["leaf_index"] + 1
    entry = api.client.get(
        "/v1/log/entries", params={"start": size_before, "end": size_before + 1}, headers=api.researcher
    ).json()["entries"][0]
    assert entry["kind"] == "reproduction"
    assert entry["data"] == canonical_json(
        {"kind": "reproduction", "record_sha256": sha256_hex(canonical_json(seen["log"]["record"]))}
    )
    assert seen["log"]["record"]["outcome"] == "reproduced" and seen["log"]["record"]["job_id"] == job_id
    # Nothing new released; the release is the first one's.
    after = api.client.get(f"/v1/jobs/{job_id}", headers=api.operator).json()
    assert after["result"] == before["result"]
    with api.db() as s:
        assert s.query(Result).filter(Result.job_id == run_id).count() == 0
        run = s.get(Job, run_id)
        reservation = s.get(BudgetReservation, run_id)
        operator_id = run.principal_id
        assert run.principal.name == "ops" and run.reproduces == job_id and run.result_raw is None
        # Charged to the operator who asked: the original's model rows, no ε, no bits.
        assert (reservation.principal_id, reservation.rows, reservation.ran) == (operator_id, 1000, True)
        assert (reservation.epsilon_micro, reservation.millibits) == (0, 0)
        assert api.client.app.state.budgets.rows.used(operator_id, s) == 1000
    # ... and never to the partner.
    assert partner_budget(api) == partner_before
    # The run is no job of anyone's listing, and cannot be read, cancelled or reproduced as a job.
    assert run_id not in [j["id"] for j in api.client.get("/v1/jobs", headers=api.operator).json()["jobs"]]
    assert api.client.get(f"/v1/jobs/{run_id}", headers=api.operator).status_code == 404
    assert api.client.post(f"/v1/jobs/{run_id}/reproduce", headers=api.operator).status_code == 404
    assert any(e["action"] == "reproduction.concluded" for e in api.events(job_id))


def test_other_raw_values_or_a_tampered_reference_differ(api, GOOD, demo_files):
    job_id = released(api, GOOD)
    import numpy as np

    with np.load(demo_files["data"]) as npz:
        labels = npz["y"]
    other = Outcome(exit_code=0, result=rows_file(labels, wrong=101), usage=GOOD.usage, images=GOOD.images)
    run_id = reproduce(api, job_id)["id"]
    assert runner.run_job(context(api, StubSandbox(other)), run_id) == JobState.COMPARED
    assert reproductions(api, job_id)[0]["outcome"] == "differs"

    with api.db() as s:
        result = release_service.existing(s, job_id)
        assert result is not None and result.raw_hmac is not None and len(result.raw_hmac) == 64
        result.raw_hmac = "0" * 64
    run_id = reproduce(api, job_id)["id"]
    assert runner.run_job(context(api, StubSandbox(GOOD)), run_id) == JobState.COMPARED
    assert [r["outcome"] for r in reproductions(api, job_id)] == ["differs", "differs"]


def test_a_release_without_a_reference_says_so_and_runs_nothing(api, GOOD):
    job_id = released(api, GOOD)
    with api.db() as s:
        result = release_service.existing(s, job_id)
        assert result is not None
        result.raw_hmac = None  # as for a release made before revision 0013
    enqueued, size = len(api.dispatcher.enqueued), log_size(api)
    asked = reproduce(api, job_id)
    assert (asked["outcome"], asked["reason"]) == ("no_reference", None)
    assert len(api.dispatcher.enqueued) == enqueued and log_size(api) == size + 1
    with api.db() as s:
        assert s.get(Job, asked["id"]) is None  # no run, nothing charged


class NoImages(StubSandbox):
    """A host whose images were removed."""

    def image_id(self, tag: str) -> str:
        raise ImageMissing(f"image {tag} is missing")


def test_a_missing_image_or_file_could_not_run_and_costs_nothing(api, GOOD):
    job_id = released(api, GOOD)
    run_id = reproduce(api, job_id)["id"]
    assert runner.run_job(context(api, NoImages()), run_id) == JobState.FAILED
    [seen] = reproductions(api, job_id)
    assert (seen["outcome"], seen["reason"]) == ("could_not_run", "image_missing")
    with api.db() as s:
        reservation = s.get(BudgetReservation, run_id)
        assert reservation.ran is False  # nothing ran: the operator's rows go back
        model = s.get(Job, job_id).model
        blob = storage.blob_path(api.settings.data_dir, model.sha256)
    # A file purged from the data directory: the same, with its reason.
    blob.chmod(0o644)
    blob.unlink()
    run_id = reproduce(api, job_id)["id"]
    sandbox = StubSandbox(GOOD)
    assert runner.run_job(context(api, sandbox), run_id) == JobState.FAILED
    assert not sandbox.runs
    assert (reproductions(api, job_id)[0]["outcome"], reproductions(api, job_id)[0]["reason"]) == (
        "could_not_run",
        "artifact_missing",
    )


def test_a_run_that_fails_could_not_run_with_its_error_class(api, GOOD):
    job_id = released(api, GOOD)
    run_id = reproduce(api, job_id)["id"]
    crashed = Outcome(exit_code=1, result=None, usage=GOOD.usage, images=GOOD.images)
    assert runner.run_job(context(api, StubSandbox(crashed)), run_id) == JobState.FAILED
    seen = reproductions(api, job_id)[0]
    assert (seen["outcome"], seen["reason"], seen["error_class"]) == ("could_not_run", "run_failed", "crashed")


def test_a_worker_that_dies_mid_reproduction_leaves_nothing_stuck(api, GOOD):
    job_id = released(api, GOOD)
    run_id = reproduce(api, job_id)["id"]

    class Died(BaseException):
        """Stands for kill -9 while the sandbox runs."""

    with pytest.raises(Died):
        runner.run_job(context(api, StubSandbox(Died())), run_id)
    with api.db() as s:
        run = s.get(Job, run_id)
        assert run.state == JobState.RUNNING and run.lease_owner is not None
        run.lease_expires_at = utcnow() - timedelta(seconds=api.settings.lease_s * 1.5)
    sandbox = StubSandbox()
    state = api.client.app.state
    reaped = Recovery(api.settings, state.sessionmaker, state.budgets, api.dispatcher, remove=sandbox.remove).reap()
    assert reaped == {run_id: JobState.FAILED} and run_id in sandbox.removed
    seen = reproductions(api, job_id)[0]
    assert (seen["outcome"], seen["reason"], seen["error_class"]) == ("could_not_run", "run_failed", "internal_error")
    # It is over: another reproduction may be asked for.
    assert reproduce(api, job_id)["outcome"] is None


def test_who_may_ask_and_how_often(api, GOOD):
    job_id = released(api, GOOD)
    for who in (api.researcher, api.partner):
        r = api.client.post(f"/v1/jobs/{job_id}/reproduce", headers=who)
        assert r.status_code == 403 and r.json()["error"] == "reproduction_not_allowed", r.text
    assert api.client.post(f"/v1/jobs/{job_id}/reproduce", headers=api.other).status_code == 404
    queued = api.post_job(metrics=["accuracy"], resources={"query_budget": 1000}).json()["id"]
    r = api.client.post(f"/v1/jobs/{queued}/reproduce", headers=api.operator)
    assert r.status_code == 409 and r.json()["error"] == "job_not_released"
    run_id = reproduce(api, job_id)["id"]
    r = api.client.post(f"/v1/jobs/{job_id}/reproduce", headers=api.operator)
    assert r.status_code == 409 and r.json()["error"] == "reproduction_in_progress"
    assert runner.run_job(context(api, StubSandbox(GOOD)), run_id) == JobState.COMPARED
    for _ in range(api.settings.reproductions_per_job_per_day - 1):
        assert runner.run_job(context(api, StubSandbox(GOOD)), reproduce(api, job_id)["id"]) == JobState.COMPARED
    r = api.client.post(f"/v1/jobs/{job_id}/reproduce", headers=api.operator)
    assert r.status_code == 429 and r.json()["error"] == "reproductions_exhausted" and "Retry-After" in r.headers
    refused = [e for e in api.events(job_id) if e["action"] == "reproduction.refused"]
    assert [e["data"]["reason"] for e in refused][-1] == "reproductions_exhausted"


def test_a_partner_sees_its_jobs_reproductions_padded_and_without_who_or_log(api, GOOD):
    job_id = released(api, GOOD)
    run_id = reproduce(api, job_id)["id"]
    assert runner.run_job(context(api, StubSandbox(GOOD)), run_id) == JobState.COMPARED
    timeout_s = api.client.get(f"/v1/jobs/{job_id}", headers=api.partner).json()["spec"]["resources"]["timeout_s"]
    # Ended at once: still not shown until the job's time limit (padded) has passed since it was asked.
    [seen] = reproductions(api, job_id, api.partner)
    assert seen["outcome"] is None and seen["finished_at"] is None
    assert seen["requested_by"] is None and seen["log"] is None and seen["requester_role"] == "operator"
    with api.db() as s:
        reproduction = s.get(Reproduction, run_id)
        reproduction.created_at = utcnow() - timedelta(seconds=timeout_s + 1)
        # A run that ended after the limit (it waited for a worker) is shown at its padded end.
        reproduction.finished_at = utcnow() + timedelta(seconds=3)  # far enough that a slow run still asks first
    [seen] = reproductions(api, job_id, api.partner)
    assert seen["outcome"] is None
    time.sleep(api.settings.timing_buckets_s[-1] + 3.1)
    [seen] = reproductions(api, job_id, api.partner)
    assert seen["outcome"] == "reproduced" and seen["error_class"] is None and seen["log"] is None
    assert seen["finished_at"] is not None
    assert api.client.get(f"/v1/jobs/{job_id}/reproductions", headers=api.other).status_code == 404
    assert reproductions(api, job_id, api.researcher)[0]["requested_by"] == "ops"


@pytest.fixture
def open_to_researchers(tmp_path: Path, demo_files) -> Iterator[Harness]:
    yield from harness(factories.settings(tmp_path / "data", researchers_may_reproduce=True), demo_files)


def test_a_researcher_may_ask_where_the_operator_allows_it_and_is_charged(open_to_researchers, GOOD):
    api = open_to_researchers
    job_id = released(api, GOOD)
    asked = reproduce(api, job_id, api.researcher)
    assert asked["requester_role"] == "researcher" and asked["requested_by"] == "curie"
    assert runner.run_job(context(api, StubSandbox(GOOD)), asked["id"]) == JobState.COMPARED
    assert reproductions(api, job_id, api.researcher)[0]["outcome"] == "reproduced"
    with api.db() as s:
        reservation = s.get(BudgetReservation, asked["id"])
        assert reservation.principal_id == s.get(Job, asked["id"]).principal_id != s.get(Job, job_id).principal_id
        assert reservation.rows == 1000


def test_a_rerun_waits_for_its_partner_to_see_the_release_and_never_runs_beside_its_twin_job(api, GOOD):
    """A job's partner reads its reproductions: one asked before the partner sees the release would
    tell it the job had released. And a re-run of the partner's code on the real data never runs
    beside a twin job of that partner, whose output the partner reads: each refuses the other."""
    api.settings.timing_buckets_s = [600.0]
    job = api.post_job(metrics=["accuracy"], resources={"query_budget": 1000}).json()["id"]
    assert runner.run_job(context(api, StubSandbox(GOOD)), job) == JobState.RELEASED
    early = api.client.post(f"/v1/jobs/{job}/reproduce", headers=api.operator)
    assert early.status_code == 409 and early.json()["error"] == "job_not_released", early.text
    assert api.client.get(f"/v1/jobs/{job}/reproductions", headers=api.partner).json()["reproductions"] == []

    past_its_padding(api, job)
    twin = api.post_job(target="twin", metrics=["accuracy"]).json()
    assert twin["state"] == "queued", twin
    refused = api.client.post(f"/v1/jobs/{job}/reproduce", headers=api.operator)
    assert refused.status_code == 409 and refused.json()["error"] == "partners_twin_job_running", refused.text
    api.client.post(f"/v1/jobs/{twin['id']}/cancel", headers=api.partner)

    asked = reproduce(api, job)
    assert asked["outcome"] is None
    beside = api.post_job(target="twin", metrics=["accuracy"])
    assert beside.status_code == 409 and beside.json()["error"] == "real_job_in_progress", beside.text
    assert "reproduction" in beside.json()["detail"]
