"""A dataset version's lifecycle, as a model version's: active → deprecated → retired, retiring one with
released jobs only after a confirmation that lists them, on the audit log; a retired version refused
for new jobs with the active alternatives, and its released jobs reproducing as `asset_retired`. On
SQLite and Postgres (the `api` fixture)."""

from __future__ import annotations

from service.errors import EvalgateError
from service.ledger import service as ledger
from service.registry import service as registry
from service.registry.lifecycle import confirmation
from tests import factories
from tests.harness import Harness
from tests.registry.test_lifecycle import register
from tests.transparency.helpers import release_job, wait_padded

STATUS = "/v1/datasets/demo-blobs/1/status"


def status_of(api: Harness, ref: str, headers: dict[str, str] | None = None) -> str:
    listed = api.client.get("/v1/datasets", headers=headers or api.partner).json()
    return str(next(d["status"] for d in listed if f"{d['name']}@{d['version']}" == ref))


def test_retiring_a_dataset_with_released_jobs_needs_the_confirmation_that_lists_them(api, demo_files):
    assert status_of(api, "demo-blobs@1") == "active"
    r = api.client.post(STATUS, headers=api.operator, json={"status": "deprecated"})
    assert r.status_code == 200 and r.json()["status"] == "deprecated", r.text
    assert status_of(api, "demo-blobs@1") == "deprecated"  # a partner reads it, and may still use it
    first = release_job(api, demo_files, "accuracy")
    r = api.client.post(STATUS, headers=api.operator, json={"status": "retired"})
    assert r.status_code == 409 and r.json()["error"] == "retirement_unconfirmed", r.text
    token = confirmation("demo-blobs@1", [first])
    assert r.json()["alternatives"] == [f"job:{first}", f"confirm:{token}"] and token in r.json()["detail"]
    # A release in between changes the list, and so the token: the old one no longer retires it.
    second = release_job(api, demo_files, "macro_f1")
    r = api.client.post(STATUS, headers=api.operator, json={"status": "retired", "confirm": token})
    assert r.status_code == 409 and f"job:{second}" in r.json()["alternatives"]
    assert status_of(api, "demo-blobs@1") == "deprecated"
    token = r.json()["alternatives"][-1].removeprefix("confirm:")
    r = api.client.post(STATUS, headers=api.operator, json={"status": "retired", "confirm": token})
    assert r.status_code == 200 and r.json()["status"] == "retired", r.text
    with api.db() as s:
        (confirmed,) = ledger.events_for(s, "dataset:demo-blobs@1", "dataset.retirement_confirmed")
        moves = [e["data"] for e in ledger.events_for(s, "dataset:demo-blobs@1", "dataset.status")]
    assert confirmed["data"]["released_jobs"] == [first, second] and confirmed["actor"] == "operator:ops"
    assert moves == [{"from": "active", "to": "deprecated"}, {"from": "deprecated", "to": "retired"}]
    # Only forward, only known states, only operators.
    r = api.client.post(STATUS, headers=api.operator, json={"status": "active"})
    assert r.status_code == 409 and r.json()["error"] == "invalid_transition"
    r = api.client.post(STATUS, headers=api.operator, json={"status": "archived"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_status"
    assert api.client.post(STATUS, headers=api.partner, json={"status": "retired"}).status_code == 403
    r = api.client.post("/v1/datasets/nope/1/status", headers=api.operator, json={"status": "retired"})
    assert r.status_code == 404 and r.json()["error"] == "unknown_dataset_version"
    # Who used it stays readable after it is retired.
    usage = api.client.get("/v1/datasets/demo-blobs/1/usage", headers=api.operator).json()
    assert [(u["partner"], u["released"]) for u in usage["partners"]] == [("acme", 2)]


def test_a_dataset_without_released_jobs_retires_at_once(api, demo_files):
    assert register(api, demo_files["data"], "datasets", "unused").status_code == 201
    r = api.client.post("/v1/datasets/unused/1/status", headers=api.operator, json={"status": "retired"})
    assert r.status_code == 200 and r.json()["status"] == "retired"


def test_a_retired_dataset_is_refused_with_its_active_versions(api, demo_files):
    """The rule admission applies (registry.usable_dataset), with the catalogue's rule named."""
    with open(demo_files["data"], "rb") as f:
        r = api.client.post(
            "/v1/datasets", headers=api.operator, data={"name": "demo-blobs", "version": "2"}, files={"file": f}
        )
    assert r.status_code == 201, r.text
    r = api.client.post(STATUS, headers=api.operator, json={"status": "retired"})
    assert r.status_code == 200, r.text
    with api.db() as s:
        assert registry.usable_dataset(s, "demo-blobs@2").ref == "demo-blobs@2"
        try:
            registry.usable_dataset(s, "demo-blobs@1")
            raise AssertionError("a retired dataset version was usable")
        except EvalgateError as e:
            refused = e
    assert (refused.status_code, refused.code, refused.rule) == (403, "dataset_retired", "retired_datasets")
    assert refused.alternatives == ["demo-blobs@2"]
    rules = {rule["id"]: rule for rule in api.client.get("/v1/policies", headers=api.partner).json()}
    assert rules["retired_datasets"]["errors"] == ["dataset_retired"]


def test_a_partners_submission_on_a_retired_dataset_is_refused(api, demo_files):
    """Needs admission to call registry.usable_dataset (the patch handed to the lead for
    service/jobs/admission.py and service/jobs/endpoints.py)."""
    assert register(api, demo_files["data"], "datasets", "other").status_code == 201
    assert api.client.post(STATUS, headers=api.operator, json={"status": "retired"}).status_code == 200
    for dry_run in (True, False):
        r = api.client.post(
            "/v1/jobs",
            headers=api.partner,
            params={"dry_run": dry_run},
            json=_spec(dataset="demo-blobs@1"),
        )
        assert r.status_code == 403 and r.json()["error"] == "dataset_retired", r.text
        assert r.json()["rule"] == "retired_datasets" and r.json()["alternatives"]
    with api.db() as s:
        refusals = ledger.events_for(s, "principal:acme", "job.refused")
    assert [e["data"]["reason"] for e in refusals] == ["dataset_retired"]  # the dry run records nothing
    # The other datasets still take jobs.
    r = api.client.post("/v1/jobs", headers=api.partner, json=_spec(dataset="other@1"))
    assert r.status_code == 202, r.text


def _spec(**spec: object) -> dict:
    return factories.job_spec(metrics=["accuracy"], resources={"query_budget": 100}, **spec)


def test_a_released_job_on_a_retired_dataset_reproduces_as_asset_retired(api, demo_files):
    job_id = release_job(api, demo_files, "accuracy")
    wait_padded(api)  # reproducible once its partner sees it released
    token = confirmation("demo-blobs@1", [job_id])
    r = api.client.post(STATUS, headers=api.operator, json={"status": "retired", "confirm": token})
    assert r.status_code == 200, r.text
    r = api.client.post(f"/v1/jobs/{job_id}/reproduce", headers=api.operator)
    assert r.status_code == 202, r.text
    assert (r.json()["outcome"], r.json()["reason"]) == ("could_not_run", "asset_retired")
    assert api.dispatcher is not None and r.json()["id"] not in [j for j, _ in api.dispatcher.enqueued]
    # The published result itself is untouched.
    seen = api.client.get(f"/v1/jobs/{job_id}", headers=api.operator).json()
    assert seen["state"] == "released" and seen["result"] is not None


def test_operators_read_a_dataset_policys_history(api):
    path = "/v1/policies/datasets/demo-blobs/1"
    r = api.client.put(
        path, headers={**api.operator, "If-Match": '"0"'}, json={"min_dataset_rows": 50, "reason": "tiny pilot"}
    )
    assert r.status_code == 200, r.text
    r = api.client.get(f"{path}/history", headers=api.operator)
    assert r.status_code == 200, r.text
    [change] = r.json()
    assert (change["changed"], change["reason"], change["version"]) == (["min_dataset_rows"], "tiny pilot", 1)
    assert change["new"]["min_dataset_rows"] == 50 and change["old"]["min_dataset_rows"] is None
    assert api.client.get(f"{path}/history", headers=api.partner).status_code == 403
    assert api.client.get("/v1/policies/datasets/nope/1/history", headers=api.operator).status_code == 404
