"""Bad input told plainly: each refusal says what to change (issue: partners, bad input). About
messages, not storage: one API on SQLite for the module, and nothing a test leaves changes another's."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.db import utcnow
from service.jobs.models import Job
from service.jobs.states import JobState
from service.release.outcomes import ADVICE, ErrorClass
from tests import factories
from tests.factories import CLASSIFICATION, tar_gz
from tests.harness import harness


@pytest.fixture(scope="module")
def api(tmp_path_factory, demo_files):
    yield from harness(factories.settings(tmp_path_factory.mktemp("refusals") / "data"), demo_files)


def job(api, **over):
    body = {"suite": CLASSIFICATION, "model": "demo-classifier@1", "dataset": "demo-blobs@1", "metrics": ["accuracy"]}
    return api.client.post("/v1/jobs", headers=api.partner, json={**body, **over})


@pytest.mark.parametrize(
    "field, asked, code, offered, says",
    [
        ("model", "demo-clasifier@1", "unknown_model_version", ["demo-classifier@1"], "did you mean demo-classifier?"),
        ("model", "Demo-Classifier@1", "unknown_model_version", ["demo-classifier@1"], "did you mean"),
        ("model", "demo-classifier@7", "unknown_model_version", ["demo-classifier@1"], "has no version 7"),
        ("dataset", "demo-blob@1", "unknown_dataset_version", ["demo-blobs@1"], "did you mean demo-blobs?"),
        ("model", "zzzzzz@1", "unknown_model_version", [], "unknown model zzzzzz@1"),
    ],
)
def test_an_unknown_name_offers_the_closest(api, field, asked, code, offered, says):
    r = job(api, **{field: asked})
    assert r.status_code == 404, r.text
    assert r.json()["error"] == code and r.json()["alternatives"] == offered and says in r.json()["detail"]


def test_a_misspelt_suite_offers_the_suites_the_partner_may_use(api):
    name, _, version = CLASSIFICATION.partition("@")
    r = job(api, suite=f"{name[:-1]}@{version}")  # one letter short
    assert r.status_code == 404 and r.json()["error"] == "unknown_suite_version"
    assert f"evalgate/{CLASSIFICATION}" in r.json()["alternatives"]


def test_a_metric_the_suite_does_not_declare_lists_those_it_does(api):
    r = job(api, metrics=["acuracy"])
    assert r.status_code == 422 and r.json()["error"] == "undeclared_metric"
    assert "accuracy" in r.json()["alternatives"]


def upload(api, files):
    return api.client.post("/v1/suites", headers=api.partner, files={"file": ("s.tar.gz", tar_gz(files))})


def test_an_invalid_suite_yaml_names_its_line(api):
    r = upload(api, {"suite.yaml": "name: s\nversion: 1.0.0\nentrypoint: main.py\nmetrics: [a,\n", "main.py": ""})
    assert r.status_code == 422 and r.json()["error"] == "bundle_bad_manifest"
    assert "line 5" in r.json()["detail"] or "line 4" in r.json()["detail"], r.json()
    r = upload(api, {"suite.yaml": "name: s\nversion: 1.0.0\nentrypoint: main.py\nmetrics: 7\n", "main.py": ""})
    assert r.status_code == 422 and "metrics (line 4)" in r.json()["detail"], r.json()


def test_a_missing_entrypoint_offers_the_files_there_are(api):
    manifest = "name: s\nversion: 1.0.0\nentrypoint: main.py\nmetrics: {score: proportion}\n"
    r = upload(api, {"suite.yaml": manifest, "src/run.py": "", "README.md": ""})
    assert r.status_code == 422 and r.json()["error"] == "bundle_bad_manifest"
    assert "'main.py' is not in the bundle" in r.json()["detail"]
    assert r.json()["alternatives"] == ["entrypoint: src/run.py"]


def test_every_ending_but_a_cancel_comes_with_advice(api):
    assert set(ADVICE) == set(ErrorClass) - {ErrorClass.CANCELLED}
    assert "evalgate dev run" in ADVICE[ErrorClass.CRASHED] and "traceback" in ADVICE[ErrorClass.CRASHED]
    r = job(api)
    assert r.status_code == 202 and r.json()["advice"] is None
    with api.db() as s:  # the job crashed, long enough ago for its padded time to have passed
        row = s.get(Job, r.json()["id"])
        row.state, row.error_class = JobState.FAILED, ErrorClass.CRASHED
        row.created_at = row.finished_at = utcnow() - timedelta(minutes=5)
    for who in (api.partner, api.operator):
        seen = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=who).json()
        assert seen["error_class"] == "crashed" and seen["advice"] == ADVICE[ErrorClass.CRASHED]
