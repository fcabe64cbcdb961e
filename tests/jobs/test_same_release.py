"""Asking for the same release again returns the earlier job, judged by what its partner may see of
it: a job that really ended without a release is still 'on its way' to its partner until its padded
completion time, so a free dry run (or a resubmission) cannot tell the moment it really ended."""

from __future__ import annotations

from service.jobs import runner
from service.jobs.states import JobState
from service.sandbox.spec import Outcome
from tests import factories
from tests.harness import Harness
from tests.stubs import StubSandbox, context, past_its_padding, released_outcome


def ask(api: Harness, metric: str, dry_run: bool = False):
    params = {"dry_run": "true"} if dry_run else {}
    return api.client.post(
        "/v1/jobs",
        headers=api.partner,
        params=params,
        json=factories.job_spec(metrics=[metric], resources={"query_budget": 1000}),
    )


def test_a_job_that_really_failed_is_the_same_release_until_its_padded_time(api: Harness, demo_files):
    api.settings.timing_buckets_s = [600.0]
    failed = ask(api, "accuracy").json()["id"]
    released = ask(api, "macro_f1").json()["id"]
    assert runner.run_job(context(api, StubSandbox(Outcome(exit_code=1))), failed) == JobState.FAILED
    assert runner.run_job(context(api, StubSandbox(released_outcome(demo_files["data"]))), released) == (
        JobState.RELEASED
    )

    # Before the padded time both look the same to their partner, in every answer it can get.
    for job_id, metric in ((failed, "accuracy"), (released, "macro_f1")):
        assert api.client.get(f"/v1/jobs/{job_id}", headers=api.partner).json()["state"] == "running"
        preview = ask(api, metric, dry_run=True).json()
        assert preview["admitted"] is True and preview["reuses"] == job_id
        again = ask(api, metric)
        assert again.status_code == 200 and again.json()["reused"] is True and again.json()["id"] == job_id

    # Past it, the failed job ends as it ended, and the same request runs anew; the release stays.
    past_its_padding(api, failed)
    past_its_padding(api, released)
    assert api.client.get(f"/v1/jobs/{failed}", headers=api.partner).json()["state"] == "failed"
    assert ask(api, "accuracy", dry_run=True).json()["reuses"] is None
    fresh = ask(api, "accuracy")
    assert fresh.status_code == 202 and fresh.json()["id"] != failed
    assert ask(api, "macro_f1", dry_run=True).json()["reuses"] == released
