"""After registration: license terms (at registration, changed later, shown with every job and signed
into each release), which partners used a version, and retiring one only with a confirmation that
lists the released jobs it would leave without a re-run."""

from __future__ import annotations

import base64
import json

from service.ledger import service as ledger
from service.registry.lifecycle import confirmation
from service.transparency.verify import verify_bundle
from tests.harness import Harness
from tests.transparency.helpers import bundle, key, release_job, wait_padded

MIT = {"terms": "use for evaluation only", "spdx": "MIT"}
CC = {"terms": "attribution required", "url": "https://creativecommons.org/licenses/by/4.0/"}


def set_terms(api: Harness, kind: str, ref: str, reason: str = "from the owner", headers=None, **terms):
    return api.client.put(
        f"/v1/{kind}/{ref}/license", headers=headers or api.operator, json={**terms, "reason": reason}
    )


def register(api: Harness, path, kind: str, name: str, **form: str):
    with open(path, "rb") as f:
        return api.client.post(
            f"/v1/{kind}", headers=api.operator, data={"name": name, "version": "1", **form}, files={"file": f}
        )


def test_terms_set_at_registration_and_later_and_validated(api, demo_files):
    r = register(
        api, demo_files["model"], "models", "licensed", license_terms="research only", license_spdx="CC-BY-NC-4.0"
    )
    assert r.status_code == 201, r.text
    assert r.json()["license"] == {"terms": "research only", "spdx": "CC-BY-NC-4.0", "url": None}
    r = register(api, demo_files["model"], "models", "unnamed", license_terms="no id given")
    assert r.status_code == 422 and r.json()["error"] == "invalid_license"
    r = register(api, demo_files["data"], "datasets", "bad-url", license_terms="x", license_url="ftp://nope")
    assert r.status_code == 422 and r.json()["error"] == "invalid_license"

    assert set_terms(api, "datasets", "demo-blobs/1", **CC).status_code == 200
    listed = {d["name"]: d["license"] for d in api.client.get("/v1/datasets", headers=api.partner).json()}
    assert listed["demo-blobs"]["url"] == CC["url"]
    assert set_terms(api, "models", "demo-classifier/1", reason=" ", **MIT).json()["error"] == "reason_required"
    assert set_terms(api, "models", "demo-classifier/1", terms="x").status_code == 422  # neither id nor URL
    assert set_terms(api, "models", "demo-classifier/1", headers=api.partner, **MIT).status_code == 403
    assert set_terms(api, "models", "nope/1", **MIT).json()["error"] == "unknown_model_version"
    assert set_terms(api, "models", "demo-classifier/1", **MIT).status_code == 200
    with api.db() as s:
        (event,) = ledger.events_for(s, "model:demo-classifier@1", "model.license_set")
    assert event["data"]["old"] is None and event["data"]["new"]["spdx"] == "MIT"
    assert event["data"]["reason"] == "from the owner" and event["actor"] == "operator:ops"


def test_terms_are_shown_with_the_job_and_signed_into_its_release(api, demo_files):
    before = release_job(api, demo_files, "accuracy")  # no terms yet: the predicate it always had
    set_terms(api, "models", "demo-classifier/1", **MIT)
    set_terms(api, "datasets", "demo-blobs/1", **CC)
    job_id = release_job(api, demo_files, "macro_f1")
    wait_padded(api)
    seen = api.client.get(f"/v1/jobs/{job_id}", headers=api.partner).json()
    assert seen["licenses"]["model"]["spdx"] == "MIT" and seen["licenses"]["dataset"]["url"] == CC["url"]
    assert seen["result"]["provenance"]["licenses"]["model"]["terms"] == MIT["terms"]
    b = bundle(api, job_id)
    assert verify_bundle(b, key(api)).complete
    predicate = json.loads(base64.b64decode(b["envelope"]["payload"]))["predicate"]
    assert predicate["licenses"] == {"model": MIT | {"url": None}, "dataset": CC | {"spdx": None}}
    old = json.loads(base64.b64decode(bundle(api, before)["envelope"]["payload"]))["predicate"]
    assert "licenses" not in old
    # Changed later: the job shows the terms now; its signed release keeps those it was made under.
    set_terms(api, "models", "demo-classifier/1", terms="closed", spdx="LicenseRef-closed")
    seen = api.client.get(f"/v1/jobs/{job_id}", headers=api.partner).json()
    assert seen["licenses"]["model"]["terms"] == "closed"
    assert seen["result"]["provenance"]["licenses"]["model"]["terms"] == MIT["terms"]


def test_operators_see_which_partners_used_a_version(api, demo_files):
    release_job(api, demo_files, "accuracy")
    api.post_job(api.other, metrics=["macro_f1"], resources={"query_budget": 100})
    for kind, ref in (("models", "demo-classifier/1"), ("datasets", "demo-blobs/1")):
        r = api.client.get(f"/v1/{kind}/{ref}/usage", headers=api.operator)
        assert r.status_code == 200, r.text
        rows = {u["partner"]: (u["jobs"], u["released"]) for u in r.json()["partners"]}
        assert rows == {"acme": (1, 1), "globex": (1, 0)}
        assert api.client.get(f"/v1/{kind}/{ref}/usage", headers=api.partner).status_code == 403
    assert api.client.get("/v1/models/nope/1/usage", headers=api.operator).status_code == 404


def test_retiring_a_version_with_released_jobs_needs_the_confirmation_that_lists_them(api, demo_files):
    status = "/v1/models/demo-classifier/1/status"
    assert api.client.post(status, headers=api.operator, json={"status": "deprecated"}).status_code == 200
    first = release_job(api, demo_files, "accuracy")
    r = api.client.post(status, headers=api.operator, json={"status": "retired"})
    assert r.status_code == 409 and r.json()["error"] == "retirement_unconfirmed"
    token = confirmation("demo-classifier@1", [first])
    assert r.json()["alternatives"] == [f"job:{first}", f"confirm:{token}"]
    assert token in r.json()["detail"]
    # A release in between changes the list, and so the token: the old one no longer retires it.
    second = release_job(api, demo_files, "macro_f1")
    r = api.client.post(status, headers=api.operator, json={"status": "retired", "confirm": token})
    assert r.status_code == 409 and f"job:{second}" in r.json()["alternatives"]
    token = r.json()["alternatives"][-1].removeprefix("confirm:")
    r = api.client.post(status, headers=api.operator, json={"status": "retired", "confirm": token})
    assert r.status_code == 200 and r.json()["status"] == "retired"
    with api.db() as s:
        (event,) = ledger.events_for(s, "model:demo-classifier@1", "model.retirement_confirmed")
    assert event["data"]["released_jobs"] == [first, second]
    refused = api.post_job(metrics=["accuracy"])
    assert refused.status_code == 403 and refused.json()["error"] == "model_retired"


def test_a_version_without_released_jobs_retires_at_once(api, demo_files):
    register(api, demo_files["model"], "models", "unused")
    r = api.client.post("/v1/models/unused/1/status", headers=api.operator, json={"status": "retired"})
    assert r.status_code == 200 and r.json()["status"] == "retired"


def test_a_retired_versions_weights_are_purged_with_a_reason_and_kept_while_shared(api, demo_files, tmp_path):
    from service.demo_assets import write_demo
    from service.errors import EvalgateError
    from service.registry import lifecycle, storage

    own, _ = write_demo(tmp_path / "own", n=200, seed=11)  # other weights: bytes no other version has
    assert register(api, own, "models", "own").status_code == 201
    assert register(api, demo_files["model"], "models", "twin-of-demo").status_code == 201  # demo's bytes

    def purge(ref: str, reason: str = "the owner withdrew it") -> bool | str:
        try:
            with api.db() as s:
                return lifecycle.purge_model(s, api.settings.data_dir, ref, reason=reason, actor="operator:ops")
        except EvalgateError as e:
            return e.code or ""

    assert purge("own@1") == "model_not_retired"  # active: refused, nothing deleted
    for ref in ("own", "twin-of-demo"):
        r = api.client.post(f"/v1/models/{ref}/1/status", headers=api.operator, json={"status": "retired"})
        assert r.status_code == 200, r.text
    assert purge("own@1", reason="  ") == "reason_required"
    with api.db() as s:
        sha = {m.ref: m.sha256 for m in lifecycle.registry_repo.models(s)}
    own_blob = storage.blob_path(api.settings.data_dir, sha["own@1"])
    assert own_blob.exists()
    assert purge("own@1") is True and not own_blob.exists()
    assert purge("own@1") is False  # already gone: recorded again, nothing to delete
    # The demo model's bytes are still demo-classifier@1's: retiring and purging a copy keeps them.
    assert purge("twin-of-demo@1") is False
    assert storage.blob_path(api.settings.data_dir, sha["demo-classifier@1"]).exists()
    with api.db() as s:
        events = ledger.events_for(s, "model:own@1", "model.purged")
    assert [e["data"]["deleted"] for e in events] == [True, False]
    assert events[0]["data"]["reason"] == "the owner withdrew it" and events[0]["data"]["sha256"] == sha["own@1"]


def test_a_status_that_is_not_text_is_refused_and_an_unknown_one_named(api):
    """A lone surrogate (JSON "\\ud800") was a 500 when the audit log could not encode it."""
    for kind, ref in (("models", "demo-classifier/1"), ("datasets", "demo-blobs/1")):
        raw = b'{"status": "retired\\ud800"}'
        r = api.client.post(
            f"/v1/{kind}/{ref}/status", headers=api.operator | {"Content-Type": "application/json"}, content=raw
        )
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
        r = api.client.post(f"/v1/{kind}/{ref}/status", headers=api.operator, json={"status": "gone"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_status", r.text
        got = api.client.get(f"/v1/{kind}", headers=api.operator).json()
        assert "retired" not in json.dumps(got)
