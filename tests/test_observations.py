"""Everything a partner can observe is in SECURITY.md's inventory, classified as fixed by policy,
padded, charged (in bits) or not shown. The test walks the partner-facing answers twice: as the
OpenAPI document declares them, and as a real released job, its listing, its budget and the
registry answer them, and fails on any field the inventory does not name."""

from __future__ import annotations

import re
import time
from pathlib import Path

from service.jobs import runner
from tests.factories import suite_bundle, unique
from tests.observations import PARTNER_ENDPOINTS, json_paths, normalise, schema_paths
from tests.stubs import StubSandbox, context, released_outcome

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"fixed", "padded", "charged", "not shown"}


def inventory() -> dict[str, str]:
    """SECURITY.md's inventory table: field pattern → class."""
    text = (REPO / "SECURITY.md").read_text()
    section = text.split("## What a partner can observe", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([^`]+)` \| (fixed|padded|charged|not shown)\b", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def covered(path: str, patterns: dict[str, str]) -> bool:
    # `*` is one segment (a key), `**` the rest of the path.
    for pattern in patterns:
        regex = re.escape(pattern).replace(r"\*\*", ".+").replace(r"\*", r"[^.]+")
        if re.fullmatch(regex, path):
            return True
    return False


def test_the_inventory_classifies_each_entry():
    rows = inventory()
    assert len(rows) > 40
    assert set(rows.values()) <= CLASSES


def test_every_field_the_openapi_document_declares_is_in_the_inventory(api):
    doc = api.client.app.openapi()
    missing = set()
    for (method, path), name in PARTNER_ENDPOINTS.items():
        responses = doc["paths"][path][method]["responses"]
        ok = responses.get("200") or responses.get("201") or responses.get("202")
        schema = ok["content"]["application/json"]["schema"]
        ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
        # One of several answers (a submission, or its dry run): each under its own schema's name.
        named = [(ref, name)] if ref else [(s["$ref"], s["$ref"].rsplit("/", 1)[-1]) for s in schema.get("anyOf", [])]
        if not named:
            continue  # an untyped answer (health, whoami, key): walked from real answers below
        for ref, name in named:
            prefix = name.removesuffix("[]") + ("[]" if name.endswith("[]") else "")
            for p in schema_paths(doc, ref.rsplit("/", 1)[-1], prefix):
                if not covered(normalise(p), inventory()):
                    missing.add(normalise(p))
    assert not missing, f"fields not in SECURITY.md's inventory: {sorted(missing)}"


def test_every_field_a_partner_really_reads_is_in_the_inventory(api, demo_files):
    job = api.post_job(metrics=["accuracy", "macro_f1"], resources={"query_budget": 1000}).json()
    runner.run_job(context(api, StubSandbox(released_outcome(demo_files["data"]))), job["id"])
    time.sleep(api.settings.timing_buckets_s[-1] + 0.05)  # reproducible once its partner sees it released
    asked = api.client.post(f"/v1/jobs/{job['id']}/reproduce", headers=api.operator).json()
    runner.run_job(context(api, StubSandbox(released_outcome(demo_files["data"]))), asked["id"])
    time.sleep(api.settings.timing_buckets_s[0] + 0.05)
    p = api.partner
    suite = api.upload_suite(suite_bundle(unique("seen"), "pass", ["score"]), approve=False)
    published = api.client.post(f"/v1/suites/{suite['owner']}/{suite['name']}/{suite['version']}/publish", headers=p)
    assert published.status_code == 200 and published.json()["published"] is True
    policy = {"public_name": "Acme Labs", "models": ["demo-classifier"], "datasets": ["demo-blobs@1"], "reason": "t"}
    put = api.client.put("/v1/policies/partners/acme", headers=api.operator | {"If-Match": '"0"'}, json=policy)
    assert put.status_code == 200, put.text
    answers = {
        "PartnerPolicyRead": api.client.get("/v1/policies/partners/acme", headers=p).json(),
        "DatasetPolicyRead": api.client.get("/v1/policies/datasets/demo-blobs/1", headers=p).json(),
        "Health": api.client.get("/healthz").json(),
        "Whoami": api.client.get("/v1/whoami", headers=p).json(),
        "AttestationKey": api.client.get("/v1/attestation-key").json(),
        "ModelRead[]": api.client.get("/v1/models", headers=p).json(),
        "DatasetRead[]": api.client.get("/v1/datasets", headers=p).json(),
        "TwinRead": api.client.get("/v1/datasets/demo-blobs/1/twin/provenance", headers=p).json(),
        "SuiteRead[]": api.client.get("/v1/suites", headers=p).json(),
        "SuiteRead": published.json(),
        "JobRead": api.client.get(f"/v1/jobs/{job['id']}", headers=p).json(),
        "JobList": api.client.get("/v1/jobs", headers=p).json(),
        "AttestationBundle": api.client.get(f"/v1/jobs/{job['id']}/attestation", headers=p).json(),
        "BudgetRead": api.client.get("/v1/budget", headers=p).json(),
        "ReproductionList": api.client.get(f"/v1/jobs/{job['id']}/reproductions", headers=p).json(),
        "Error": api.client.get("/v1/jobs/nope", headers=p).json(),
    }
    assert answers["JobRead"]["state"] == "released"
    assert answers["AttestationBundle"]["log"] is None  # the log's positions are not shown to partners
    assert len(answers["ReproductionList"]["reproductions"]) == 1
    missing = set()
    for name, value in answers.items():
        if isinstance(value, list):
            paths = set().union(*(json_paths(v, f"{name.removesuffix('[]')}[]") for v in value))
        else:
            paths = json_paths(value, name)
        missing |= {normalise(q) for q in paths if not covered(normalise(q), inventory())}
    assert not missing, f"fields not in SECURITY.md's inventory: {sorted(missing)}"
