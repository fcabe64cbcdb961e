"""Suites belong to the partner that uploaded them: `owner/name@version`, bare references (own first,
then built-in), publishing, and nothing in any answer about what another partner has."""

from __future__ import annotations

import uuid

import pytest

from service.auth import errors as auth_errors
from service.jobs import runner
from service.jobs.states import JobState
from service.ledger import service as ledger
from service.registry.models import SuiteVersion
from service.sandbox.spec import Outcome
from tests import factories
from tests.factories import CLASSIFICATION, CLASSIFICATION_REF, WIDE, suite_bundle, unique
from tests.stubs import StubSandbox, context


def upload(api, headers, name, code="print(1)", version="1.0.0"):
    bundle = suite_bundle(name, code, ["score"], version=version)
    return api.client.post("/v1/suites", headers=headers, files={"file": ("s.tar.gz", bundle)})


def post_job(api, headers, suite):
    return api.post_job(headers, suite=suite, metrics=["score"])


def publish(api, headers, ref, action="publish"):
    owner, rest = ref.split("/")
    name, version = rest.split("@")
    return api.client.post(f"/v1/suites/{owner}/{name}/{version}/{action}", headers=headers)


def listed(api, headers):
    return {s["ref"] for s in api.client.get("/v1/suites", headers=headers).json()}


def builtin_row(api, name, version="1.0.0"):
    """What an upgrade that ships a new built-in suite leaves in the registry."""
    with api.db() as s:
        s.add(
            SuiteVersion(
                namespace="evalgate",
                name=name,
                version=version,
                sha256=uuid.uuid4().hex * 2,
                entrypoint="main.py",
                metrics={"score": WIDE},
                builtin=True,
                approved=True,
                published=True,
            )
        )


def test_two_partners_upload_the_same_name_and_each_resolves_its_own(api):
    name = unique("shared")
    mine, theirs = upload(api, api.partner, name, "print('acme')"), upload(api, api.other, name, "print('globex')")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert (mine.json()["ref"], theirs.json()["ref"]) == (f"acme/{name}@1.0.0", f"globex/{name}@1.0.0")
    assert (mine.json()["owner"], mine.json()["published"]) == ("acme", False)
    for headers, upload_ in ((api.partner, mine), (api.other, theirs)):
        r = post_job(api, headers, f"{name}@1.0.0")
        assert r.status_code == 202, r.text
        suite = r.json()["spec"]["suite"]
        assert (suite["ref"], suite["sha256"]) == (upload_.json()["ref"], upload_.json()["sha256"])


def test_another_partners_unpublished_suite_answers_exactly_as_a_missing_one(api):
    name = unique("secret")
    ref = f"acme/{name}@1.0.0"
    # A published version of the name makes the alternatives non-empty: they must not change either.
    assert upload(api, api.partner, name, version="2.0.0").status_code == 201
    assert publish(api, api.partner, f"acme/{name}@2.0.0").status_code == 200
    before = [post_job(api, api.other, ref), publish(api, api.other, ref), publish(api, api.other, ref, "unpublish")]
    assert upload(api, api.partner, name).status_code == 201
    after = [post_job(api, api.other, ref), publish(api, api.other, ref), publish(api, api.other, ref, "unpublish")]
    for b, a in zip(before, after, strict=True):
        assert (a.status_code, a.json()) == (b.status_code, b.json())
        assert a.json() == {
            "error": "unknown_suite_version",
            "detail": f"unknown suite {ref}",
            "alternatives": [f"acme/{name}@2.0.0"],
        }
    # A namespace nobody has answers the same way.
    nobody = post_job(api, api.other, f"nobody/{name}@1.0.0")
    assert nobody.status_code == 404
    assert nobody.json()["alternatives"] == after[0].json()["alternatives"]
    # ...while its owner uses it.
    assert post_job(api, api.partner, ref).status_code == 202


def test_alternatives_and_listings_never_show_another_namespace(api):
    name = unique("tool")
    for version in ("1.0.0", "2.0.0"):
        assert upload(api, api.partner, name, version=version).status_code == 201
    assert upload(api, api.other, name, version="3.0.0").status_code == 201
    theirs = post_job(api, api.other, f"{name}@9.0.0")
    mine = post_job(api, api.partner, f"{name}@9.0.0")
    assert theirs.status_code == mine.status_code == 404
    assert theirs.json()["alternatives"] == [f"globex/{name}@3.0.0"]
    assert mine.json()["alternatives"] == [f"acme/{name}@1.0.0", f"acme/{name}@2.0.0"]
    assert not any(r.startswith("acme/") for r in listed(api, api.other))
    assert not any(r.startswith(("acme/", "globex/")) for r in listed(api, api.researcher))
    assert CLASSIFICATION_REF in listed(api, api.other)
    assert {f"acme/{name}@1.0.0", f"globex/{name}@3.0.0"} <= listed(api, api.operator)


def test_an_upload_conflicts_only_within_its_owners_namespace(api):
    name = unique("x")
    assert upload(api, api.partner, name, "print('a')").status_code == 201
    assert upload(api, api.other, name, "print('b')").status_code == 201  # acme's suite is no concern of globex
    assert upload(api, api.other, name, "print('b')").status_code == 200
    conflict = upload(api, api.partner, name, "print('b')")
    assert conflict.status_code == 409 and conflict.json()["error"] == "version_taken"
    assert f"acme/{name}@1.0.0" in conflict.json()["detail"]


def test_an_upload_named_like_a_builtin_suite_is_refused(api):
    builtin_name = CLASSIFICATION.split("@")[0]
    r = upload(api, api.partner, builtin_name, version="9.9.9")
    assert r.status_code == 403 and r.json()["error"] == "suite_name_reserved"
    assert f"acme/{builtin_name}@9.9.9" not in listed(api, api.partner)


def test_no_principal_may_be_named_like_the_builtin_namespace(api):
    with api.db() as s, pytest.raises(auth_errors.PrincipalNameReserved):
        factories.principal(s, "evalgate", "partner")


def test_a_bare_reference_means_ones_own_suite_first_then_the_builtin_one(api):
    name = unique("newmetrics")
    assert upload(api, api.partner, name).status_code == 201
    assert post_job(api, api.partner, f"{name}@1.0.0").json()["spec"]["suite"]["ref"] == f"acme/{name}@1.0.0"
    builtin_row(api, name)  # an upgrade ships a built-in suite that acme's name already uses
    # acme's bare reference means what it meant; globex's means the built-in one; both are reachable in full.
    assert post_job(api, api.partner, f"{name}@1.0.0").json()["spec"]["suite"]["ref"] == f"acme/{name}@1.0.0"
    assert post_job(api, api.other, f"{name}@1.0.0").json()["spec"]["suite"]["ref"] == f"evalgate/{name}@1.0.0"
    full = post_job(api, api.partner, f"evalgate/{name}@1.0.0")
    assert full.status_code == 202 and full.json()["spec"]["suite"]["ref"] == f"evalgate/{name}@1.0.0"
    # acme keeps versioning its own suite of that name; nobody else may take the name any more.
    assert upload(api, api.partner, name, version="2.0.0").status_code == 201
    refused = upload(api, api.other, name, version="2.0.0")
    assert refused.status_code == 403 and refused.json()["error"] == "suite_name_reserved"
    builtin = api.post_job(api.partner, suite=CLASSIFICATION)
    assert builtin.status_code == 202 and builtin.json()["spec"]["suite"]["ref"] == CLASSIFICATION_REF


def test_publishing_lets_other_partners_use_a_suite_and_the_records_name_it_in_full(api):
    name = unique("shared")
    ref = f"acme/{name}@1.0.0"
    assert upload(api, api.partner, name).status_code == 201
    assert post_job(api, api.other, ref).status_code == 404
    first, again = publish(api, api.partner, ref), publish(api, api.partner, ref)
    assert first.status_code == again.status_code == 200 and first.json()["published"] is True
    with api.db() as s:
        assert [e["action"] for e in ledger.events_for(s, f"suite:{ref}")].count("suite.published") == 1
    assert ref in listed(api, api.other)
    taken = post_job(api, api.other, ref)
    assert taken.status_code == 202, taken.text
    job = taken.json()
    assert job["state"] == "awaiting_approval"  # approval still applies to custom code
    assert job["spec"]["suite"]["ref"] == ref
    # Seen, not owned: globex may not withdraw it.
    r = publish(api, api.other, ref, "unpublish")
    assert r.status_code == 403 and r.json()["error"] == "not_suite_owner"
    r = publish(api, api.other, CLASSIFICATION_REF, "unpublish")
    assert r.status_code == 403 and r.json()["error"] == "not_suite_owner"
    # Withdrawn: no new jobs of globex, but the job admitted with it keeps it, runs and records it in full.
    assert publish(api, api.partner, ref, "unpublish").json()["published"] is False
    assert post_job(api, api.other, ref).status_code == 404
    assert api.client.post(f"/v1/suites/acme/{name}/1.0.0/approve", headers=api.operator).status_code == 200
    ran = Outcome(exit_code=0, result=b'{"score": 0.5}', usage={"rows": 0}, images={"job": "j", "sidecar": "s"})
    assert runner.run_job(context(api, StubSandbox(ran)), job["id"]) == JobState.RELEASED
    released = api.client.get(f"/v1/jobs/{job['id']}", headers=api.operator).json()
    assert released["result"]["provenance"]["suite"]["ref"] == ref


def test_an_operator_may_publish_any_suite_but_not_withdraw_a_builtin_one(api):
    name = unique("ops-pub")
    assert upload(api, api.partner, name).status_code == 201
    r = publish(api, api.operator, f"acme/{name}@1.0.0")
    assert r.status_code == 200 and r.json()["published"] is True
    assert post_job(api, api.other, f"acme/{name}@1.0.0").status_code == 202
    r = publish(api, api.operator, CLASSIFICATION_REF, "unpublish")
    assert r.status_code == 409 and r.json()["error"] == "builtin_suite_always_published"
    assert publish(api, api.researcher, f"acme/{name}@1.0.0").status_code == 403  # a role, not a suite, refused


def test_a_malformed_suite_reference_is_refused(api):
    for ref in ("a/b/c@1.0.0", "no-version", "/x@1.0.0", "x@"):
        r = api.post_job(api.partner, suite=ref)
        assert r.status_code == 422 and r.json()["error"] == "invalid_reference", ref


def test_a_principal_named_like_the_builtin_namespace_before_it_was_reserved_cannot_upload(api):
    from service.registry import errors, suites

    with api.db() as s, pytest.raises(errors.SuiteNameReserved):
        suites.check_upload_name(s, 999, "evalgate", unique("anything"))
