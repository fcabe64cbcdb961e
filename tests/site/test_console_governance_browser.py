"""The console's governance in Chromium, as an operator uses it: a dataset version's policy changed with
a reason (and a blank reason, a stale form and a forged form refused), who used the version, retiring
one only after a page that lists the released jobs it leaves without a re-run, and lifting a partner's
suspension with a reason."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from service.ledger import service as ledger
from tests.site.browser import screenshot
from tests.site.seed import Seeded, release
from tests.site.test_browser import sign_in

DATASET = "/site/console/datasets/demo-blobs/1"
POLICY = "/v1/policies/datasets/demo-blobs/1"


def test_an_operator_changes_a_datasets_policy_with_a_reason(page, server: str, site: Seeded, tmp_path: Path):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.operator)
    page.get_by_role("link", name="Console").click()
    page.get_by_role("link", name="Datasets").click()
    page.wait_for_url(f"{server}/site/console/datasets")
    row = page.locator("table.datasets tbody tr", has=page.locator("th", has_text="demo-blobs@1"))
    assert "acme (" in row.inner_text() and "globex (" in row.inner_text() and "active" in row.inner_text()
    row.get_by_role("link", name="demo-blobs@1").click()
    page.wait_for_url(f"{server}{DATASET}")
    usage = page.locator("table.usage tbody")
    assert "acme" in usage.inner_text() and "globex" in usage.inner_text()
    # A blank reason (spaces pass the browser's `required`): refused by the service, nothing saved.
    page.get_by_label("Most ε per metric").fill("0.75")
    page.get_by_label("Reason for this change").fill("   ")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Save demo-blobs@1's policy").click()
    assert answer.value.status == 422
    assert "Say why you are making this change" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Most ε per metric").input_value() == "0.75"  # what was typed is kept
    assert httpx.get(f"{server}{POLICY}", headers=site.h.operator).json()["version"] == 0
    # Values that do not fit together: the service's own words.
    page.get_by_label("Default ε per metric").fill("2")
    page.get_by_label("Reason for this change").fill("tighter ceiling for the pilot")
    page.get_by_role("button", name="Save demo-blobs@1's policy").click()
    page.wait_for_load_state()
    assert "above the ceiling" in page.get_by_role("alert").inner_text()
    page.get_by_label("Default ε per metric").fill("")
    page.get_by_label("DP mechanism").select_option("gaussian")
    page.get_by_role("button", name="Save demo-blobs@1's policy").click()
    page.wait_for_url(f"{server}{DATASET}?saved=1")
    assert page.get_by_role("status").inner_text().startswith("Saved.")
    history = page.locator("table.history tbody tr").first
    assert "tighter ceiling for the pilot" in history.inner_text() and "operator:ops" in history.inner_text()
    screenshot(page, "console-dataset", tmp_path)
    policy = httpx.get(f"{server}{POLICY}", headers=site.h.partner).json()
    assert policy["rules"]["max_epsilon_per_metric"] == 0.75 and policy["rules"]["dp_mechanism"] == "gaussian"
    assert policy["version"] == 1
    # The partner's next submission meets it: ε above the new ceiling is refused.
    body = {**_job(), "epsilon": 0.9}
    r = httpx.post(f"{server}/v1/jobs", headers=site.h.other, params={"dry_run": True}, json=body, timeout=30)
    assert r.status_code == 422 and r.json()["error"] == "epsilon_above_policy", r.text


def test_a_stale_dataset_policy_form_is_refused_not_written(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.operator)
    other = page.context.new_page()  # the same operator, in a second tab opened at the same time
    for tab in (page, other):
        tab.goto(f"{server}{DATASET}")
    other.get_by_label("Withhold a metric computed on fewer rows than").fill("40")
    other.get_by_label("Reason for this change").fill("first")
    other.get_by_role("button", name="Save demo-blobs@1's policy").click()
    other.wait_for_url(re.compile(r".*saved=1"))
    page.get_by_label("Withhold a metric computed on fewer rows than").fill("400")
    page.get_by_label("Reason for this change").fill("second, from a page opened before the first")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Save demo-blobs@1's policy").click()
    assert answer.value.status == 412
    assert (
        "Nothing was saved: another change was made to demo-blobs@1's policy" in page.get_by_role("alert").inner_text()
    )
    assert page.get_by_label("Withhold a metric computed on fewer rows than").input_value() == "40"
    assert httpx.get(f"{server}{POLICY}", headers=site.h.operator).json()["rules"]["suppress_below_rows"] == 40
    # A form without the session's token is refused before anything is done.
    before = httpx.get(f"{server}{POLICY}", headers=site.h.operator).json()["version"]
    page.goto(f"{server}{DATASET}")
    page.evaluate("document.querySelector('form.limits input[name=csrf]').remove()")
    page.get_by_label("Smallest dataset (rows) that takes jobs").fill("5")
    page.get_by_label("Reason for this change").fill("forged")
    page.get_by_role("button", name="Save demo-blobs@1's policy").click()
    page.wait_for_load_state()
    assert "This form could not be accepted" in page.content()
    assert httpx.get(f"{server}{POLICY}", headers=site.h.operator).json()["version"] == before


def test_retiring_a_dataset_lists_the_jobs_it_leaves_without_a_rerun_first(
    page, server: str, site: Seeded, demo_files, tmp_path: Path
):  # type: ignore[no-untyped-def]
    h = site.h
    with open(demo_files["data"], "rb") as f:
        r = h.client.post(
            "/v1/datasets", headers=h.operator, data={"name": "old-blobs", "version": "1"}, files={"file": f}
        )
    assert r.status_code == 201, r.text
    released = release(h, demo_files, h.partner, dataset="old-blobs@1", metrics=["accuracy"])
    sign_in(page, server, h.operator)
    page.goto(f"{server}/site/console/datasets/old-blobs/1")
    page.get_by_role("button", name="Deprecate old-blobs@1").click()
    page.wait_for_url(re.compile(r".*done=deprecated"))
    assert "is deprecated" in page.get_by_role("status").inner_text()
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Retire old-blobs@1").click()
    assert answer.value.status == 409
    assert page.get_by_role("heading", name="Retire old-blobs@1?").is_visible()
    jobs = page.get_by_role("table", name="Released jobs that would lose reproducibility")
    assert jobs.get_by_role("link", name=released).is_visible()
    screenshot(page, "console-retire", tmp_path)
    listed = {d["name"]: d["status"] for d in httpx.get(f"{server}/v1/datasets", headers=h.partner).json()}
    assert listed["old-blobs"] == "deprecated"  # nothing retired until the operator confirms
    page.get_by_role("button", name="Retire old-blobs@1 anyway").click()
    page.wait_for_url(re.compile(r".*done=retired"))
    assert "is retired" in page.get_by_role("status").inner_text()
    assert page.get_by_role("button", name=re.compile("Retire")).count() == 0
    listed = {d["name"]: d["status"] for d in httpx.get(f"{server}/v1/datasets", headers=h.partner).json()}
    assert listed["old-blobs"] == "retired"
    with h.db() as s:
        (confirmed,) = ledger.events_for(s, "dataset:old-blobs@1", "dataset.retirement_confirmed")
    assert confirmed["data"]["released_jobs"] == [released] and confirmed["actor"] == "operator:ops"
    time.sleep(h.settings.timing_buckets_s[-1] + 0.05)  # reproducible once its partner sees it released
    r = httpx.post(f"{server}/v1/jobs/{released}/reproduce", headers=h.operator, timeout=30)
    assert r.status_code == 202 and (r.json()["outcome"], r.json()["reason"]) == ("could_not_run", "asset_retired")
    page.goto(f"{server}/site/console/datasets")
    row = page.locator("table.datasets tbody tr", has=page.locator("th", has_text="old-blobs@1"))
    assert "retired" in row.inner_text()


def test_an_operator_lifts_a_partners_suspension_with_a_reason(page, server: str, site: Seeded, tmp_path: Path):  # type: ignore[no-untyped-def]
    h = site.h
    policy = httpx.get(f"{server}/v1/policies/partners/globex", headers=h.operator)
    r = httpx.put(
        f"{server}/v1/policies/partners/globex",
        headers={**h.operator, "If-Match": policy.headers["etag"]},
        json={**policy.json()["set"], "rows_per_day": 1, "hard_rule_trips_per_day": 1, "reason": "a test of trips"},
    )
    assert r.status_code == 200, r.text
    body = _job()
    assert httpx.post(f"{server}/v1/jobs", headers=h.other, json=body, timeout=30).status_code == 429
    r = httpx.post(f"{server}/v1/jobs", headers=h.other, json=body, timeout=30)
    assert r.status_code == 403 and r.json()["error"] == "partner_suspended", r.text
    sign_in(page, server, h.operator)
    page.goto(f"{server}/site/console/")
    globex = page.locator("table.partners tbody tr", has=page.locator("th", has_text="globex"))
    assert "Suspended" in globex.inner_text() and "budget_exhausted" in globex.inner_text()
    assert (
        page.locator("table.partners tbody tr", has=page.locator("th", has_text="acme"))
        .get_by_role("button", name=re.compile("Lift suspension"))
        .count()
        == 0
    )
    # A blank reason is refused by the service; the partner stays suspended.
    globex.get_by_label("Reason to lift globex's suspension").fill("  ")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        globex.get_by_role("button", name="Lift suspension of globex").click()
    assert answer.value.status == 422
    assert "globex's suspension was not lifted" in page.get_by_role("alert").inner_text()
    assert httpx.get(f"{server}/v1/partners/globex/suspension", headers=h.operator).json()["suspended"] is True
    screenshot(page, "console-suspension", tmp_path)
    globex = page.locator("table.partners tbody tr", has=page.locator("th", has_text="globex"))
    globex.get_by_label("Reason to lift globex's suspension").fill("their suite had a retry loop; fixed")
    globex.get_by_role("button", name="Lift suspension of globex").click()
    page.wait_for_url(re.compile(r".*lifted=globex"))
    assert "globex's suspension is lifted" in page.get_by_role("status").inner_text()
    globex = page.locator("table.partners tbody tr", has=page.locator("th", has_text="globex"))
    assert "Suspended" not in globex.inner_text()
    shown = httpx.get(f"{server}/v1/partners/globex/suspension", headers=h.operator).json()
    assert shown["suspended"] is False and shown["history"][0]["lift_reason"] == "their suite had a retry loop; fixed"
    assert shown["history"][0]["lifted_by"] == "operator:ops"
    # Its next submission is judged as usual again (here: its tiny row budget, not the suspension).
    r = httpx.post(f"{server}/v1/jobs", headers=h.other, json=body, params={"dry_run": True}, timeout=30)
    assert r.status_code == 200 and r.json()["refusal"]["error"] != "partner_suspended", r.text


def _job() -> dict:
    from tests import factories

    return factories.job_spec(metrics=["accuracy"], resources={"query_budget": 1000})
