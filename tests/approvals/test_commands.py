"""`evalgate approvals|partners|models|datasets` as an operator runs them, on the database directly."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.harness import Harness
from tests.transparency.helpers import release_job


def evalgate(api: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVALGATE_")}
    env = {
        **clean,
        "EVALGATE_DATA_DIR": str(api.settings.data_dir),
        "EVALGATE_DATABASE_URL": str(api.settings.database_url),
        "EVALGATE_QUEUE": api.settings.queue,
    }
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_an_operator_governs_from_the_command_line(api, demo_files):
    r = evalgate(api, "quotas", "set", "acme", "max_query_budget=50", "hard_rule_trips_per_day=1", "--reason", "t")
    assert r.returncode == 0, r.stderr
    job = api.post_job(metrics=["accuracy"], request_approval=True, resources={"query_budget": 100}).json()
    listed = evalgate(api, "approvals", "list")
    assert listed.returncode == 0 and f"job_id: {job['id']}" in listed.stdout
    request_id = str(job["approval"]["id"])
    assert evalgate(api, "approvals", "grant", request_id).returncode != 0  # a reason is required
    r = evalgate(api, "approvals", "grant", request_id, "--reason", "pilot")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["state"] == "granted"
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.operator).json()["state"] == "queued"
    r = evalgate(api, "approvals", "deny", request_id, "--reason", "late")
    assert r.returncode == 1 and "approval_already_decided" in r.stderr

    # One refusal for an exhausted budget is past a limit of one trip a day: suspended.
    evalgate(api, "quotas", "set", "acme", "rows_per_day=1", "--reason", "t")
    assert api.post_job(metrics=["macro_f1"], resources={"query_budget": 10}).status_code == 429
    shown = yaml.safe_load(evalgate(api, "partners", "suspension", "acme").stdout)
    assert shown["suspended"] is True and shown["trips_today"] == {"budget_exhausted": 1}
    r = evalgate(api, "partners", "lift", "acme", "--reason", "talked to them")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["suspended"] is False
    assert "partner_not_suspended" in evalgate(api, "partners", "lift", "acme", "--reason", "x").stderr


def test_usage_license_and_retirement_from_the_command_line(api, demo_files):
    released = release_job(api, demo_files)
    usage = yaml.safe_load(evalgate(api, "models", "usage", "demo-classifier@1").stdout)
    assert usage["partners"][0]["partner"] == "acme" and usage["partners"][0]["released"] == 1
    r = evalgate(
        api, "datasets", "license", "demo-blobs@1", "--terms", "research", "--spdx", "CC-BY-4.0", "--reason", "r"
    )
    assert r.returncode == 0, r.stderr
    assert api.client.get("/v1/datasets", headers=api.partner).json()[0]["license"]["spdx"] == "CC-BY-4.0"
    assert evalgate(api, "models", "license", "demo-classifier@1", "--terms", "x", "--reason", "r").returncode == 2
    r = evalgate(api, "models", "retire", "demo-classifier@1")
    assert r.returncode == 3 and f"job:{released}" in r.stdout and "retirement_unconfirmed" in r.stderr
    token = r.stdout.strip().splitlines()[-1].removeprefix("confirm:")
    r = evalgate(api, "models", "retire", "demo-classifier@1", "--confirm", token)
    assert r.returncode == 0 and "retired" in r.stdout


def test_retiring_a_dataset_from_the_command_line(api, demo_files):
    released = release_job(api, demo_files)
    usage = yaml.safe_load(evalgate(api, "datasets", "usage", "demo-blobs@1").stdout)
    assert usage["partners"][0]["partner"] == "acme" and usage["partners"][0]["released"] == 1
    r = evalgate(api, "datasets", "retire", "demo-blobs@1")
    assert r.returncode == 3 and f"job:{released}" in r.stdout and "retirement_unconfirmed" in r.stderr
    listed = api.client.get("/v1/datasets", headers=api.partner).json()
    assert listed[0]["status"] == "active"  # nothing changed yet
    token = r.stdout.strip().splitlines()[-1].removeprefix("confirm:")
    r = evalgate(api, "datasets", "retire", "demo-blobs@1", "--confirm", token)
    assert r.returncode == 0 and "dataset demo-blobs@1: retired" in r.stdout, r.stderr
    assert api.client.get("/v1/datasets", headers=api.partner).json()[0]["status"] == "retired"
    assert "unknown_dataset_version" in evalgate(api, "datasets", "retire", "nope@1").stderr
