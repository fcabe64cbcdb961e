"""The operators' console in Chromium, as an operator uses it: the partners' bars, a limit changed with
a reason that the partner's next submission meets, a stale edit refused, keys shown once, a suite's
files read before approving it; and who cannot open it. Saves the console's README screenshots."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.jobs import runner
from service.jobs.states import JobState
from tests import factories
from tests.site.browser import screenshot
from tests.site.seed import Seeded
from tests.site.test_browser import sign_in
from tests.stubs import StubSandbox, context, crashed_outcome, held_running, released_outcome


class Everything(logging.Handler):
    """Every log record of this process (the server runs in a thread of it), formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def server_logs() -> Iterator[Everything]:
    root, handler = logging.getLogger(), Everything()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def submit(server: str, headers: dict[str, str], **spec: object) -> httpx.Response:
    body = factories.job_spec(**{"resources": {"query_budget": 1000}, **spec})
    return httpx.post(f"{server}/v1/jobs", headers=headers, json=body, timeout=30)


def test_an_operator_changes_a_limit_and_the_partners_next_submission_sees_it(
    page, server: str, site: Seeded, tmp_path: Path
):  # type: ignore[no-untyped-def]
    for partner, limits in (
        ("acme", {"bits_per_day": 400, "rows_per_day": 8000, "epsilon_budget": 5}),
        ("globex", {"bits_per_day": 64, "rows_per_day": 4000, "epsilon_budget": 2}),
    ):
        r = httpx.put(
            f"{server}/v1/policies/partners/{partner}",
            headers={**site.h.operator, "If-Match": '"0"'},
            json={**limits, "reason": "the limits of the partners' agreements"},
        )
        assert r.status_code == 200, r.text
    sign_in(page, server, site.h.operator)
    page.get_by_role("link", name="Console").click()
    page.wait_for_url(f"{server}/site/console/")
    acme = page.locator("table.partners tbody tr", has=page.locator("th", has_text="acme"))
    assert acme.locator("meter").count() >= 4  # bits, ε on the demo dataset, model rows, jobs in progress
    assert acme.get_by_label(re.compile("Jobs in progress: 1 of")).count() == 1
    screenshot(page, "console-partners", tmp_path)
    page.get_by_role("link", name="Edit acme's limits and see their history").click()
    page.wait_for_url(f"{server}/site/console/partners/acme")
    page.get_by_label("Jobs in progress").fill("1")
    page.get_by_label("Reason for this change").fill("acme holds the workers: one job at a time this week")
    page.get_by_role("button", name="Save acme's limits").click()
    page.wait_for_url(f"{server}/site/console/partners/acme?saved=1")
    assert page.get_by_role("status").inner_text().startswith("Saved.")
    history = page.locator("table.history tbody tr").first
    assert "acme holds the workers" in history.inner_text() and "operator:ops" in history.inner_text()
    screenshot(page, "console-partner", tmp_path)
    # acme has a job in progress already: its next submission meets the new limit at once.
    r = submit(server, site.h.partner, metrics=["ece"])
    assert r.status_code == 429 and r.json()["error"] == "too_many_concurrent_jobs", r.text
    page.get_by_label("Jobs in progress").fill("3")
    page.get_by_label("Reason for this change").fill("the week is over")
    page.get_by_role("button", name="Save acme's limits").click()
    page.wait_for_url(f"{server}/site/console/partners/acme?saved=1")
    r = submit(server, site.h.partner, metrics=["ece"])
    assert r.status_code == 202, r.text


def test_a_stale_edit_is_refused_not_written(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.operator)
    other = page.context.new_page()  # the same operator, in a second tab opened at the same time
    for tab in (page, other):
        tab.goto(f"{server}/site/console/partners/globex")
    other.get_by_label("Leakage bits per day").fill("1024")
    other.get_by_label("Reason for this change").fill("first")
    other.get_by_role("button", name="Save globex's limits").click()
    other.wait_for_url(re.compile(r".*saved=1"))
    page.get_by_label("Leakage bits per day").fill("99999")
    page.get_by_label("Reason for this change").fill("second, from a page opened before the first")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Save globex's limits").click()
    assert answer.value.status == 412
    alert = page.get_by_role("alert")
    assert "Nothing was saved: another change was made to globex's limits" in alert.inner_text()
    assert page.get_by_label("Leakage bits per day").input_value() == "1024"  # what is there now
    policy = httpx.get(f"{server}/v1/policies/partners/globex", headers=site.h.operator).json()
    assert policy["limits"]["bits_per_day"] == 1024


def test_researchers_and_partners_cannot_open_the_console(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    for headers in (site.h.researcher, site.h.partner):
        page.context.clear_cookies()
        sign_in(page, server, headers)
        assert page.get_by_role("link", name="Console").count() == 0
        for path in ("/site/console/", "/site/console/keys", "/site/console/partners/acme"):
            response = page.goto(f"{server}{path}")
            assert response is not None and response.status == 404
            assert page.get_by_role("heading", name="Page not found").is_visible()


def test_a_console_form_without_its_token_is_refused(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.operator)
    page.goto(f"{server}/site/console/partners/globex")
    before = httpx.get(f"{server}/v1/policies/partners/globex", headers=site.h.operator).json()["version"]
    page.evaluate("document.querySelector('form.limits input[name=csrf]').remove()")
    page.get_by_label("Model rows per day").fill("5")
    page.get_by_label("Reason for this change").fill("forged")
    page.get_by_role("button", name="Save globex's limits").click()
    page.wait_for_load_state()
    assert "This form could not be accepted" in page.content()
    assert httpx.get(f"{server}/v1/policies/partners/globex", headers=site.h.operator).json()["version"] == before


def test_a_created_key_is_shown_once_and_never_logged(
    page, server: str, site: Seeded, server_logs: Everything, tmp_path: Path
):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.operator)
    page.goto(f"{server}/site/console/keys")
    page.get_by_label("Name").fill("hypatia")
    page.get_by_label("Role").select_option("researcher")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_load_state()
    key = page.locator("pre#secret").inner_text().strip()
    assert re.fullmatch(r"eg_[A-Za-z0-9]{16}_[A-Za-z0-9_-]{43}", key)
    secret = key.split("_", 2)[2]
    assert secret not in page.url and page.url == f"{server}/site/console/keys/create"
    assert httpx.get(f"{server}/v1/whoami", headers=factories.bearer(key)).json()["name"] == "hypatia"
    page.get_by_role("link", name="Back to the keys").click()
    page.wait_for_url(f"{server}/site/console/keys")
    assert secret not in page.content() and key.split("_")[1] in page.content()
    screenshot(page, "console-keys", tmp_path)
    assert server_logs.lines, "the server's log records were not captured"
    assert not any(secret in line for line in server_logs.lines)


def test_an_operator_reads_a_waiting_suites_files_and_approves_it(page, server: str, site: Seeded, tmp_path: Path):  # type: ignore[no-untyped-def]
    code = "import json\n\n\ndef main():\n    json.dump({'score': 0.5}, open('/output/result.json', 'w'))\n\n\nmain()\n"
    bundle = factories.tar_gz({"suite.yaml": factories.manifest("reviewed", ["score"]), "main.py": code})
    r = httpx.post(f"{server}/v1/suites", headers=site.h.other, files={"file": ("suite.tar.gz", bundle)}, timeout=30)
    assert r.status_code == 201 and not r.json()["approved"], r.text
    # And a job of acme's asking for more than its policy allows.
    policy = httpx.get(f"{server}/v1/policies/partners/acme", headers=site.h.operator)
    r = httpx.put(
        f"{server}/v1/policies/partners/acme",
        headers={**site.h.operator, "If-Match": policy.headers["etag"]},
        json={**policy.json()["set"], "max_query_budget": 500, "reason": "small jobs only"},
    )
    assert r.status_code == 200, r.text
    r = submit(server, site.h.partner, metrics=["macro_f1"], request_approval=True, approval_note="one full pass")
    assert r.status_code == 202 and r.json()["state"] == "awaiting_approval", r.text
    sign_in(page, server, site.h.operator)
    page.goto(f"{server}/site/console/approvals")
    suite = page.get_by_role("region", name="globex/reviewed@1.0.0")
    assert suite.get_by_role("cell", name="main.py").is_visible()
    assert "json.dump({'score': 0.5}" in suite.locator("pre.code").first.inner_text()
    screenshot(page, "console-approvals", tmp_path)
    suite.get_by_role("button", name="Approve globex/reviewed@1.0.0").click()
    page.wait_for_url(re.compile(r".*done=suite.*"))
    assert "Approved globex/reviewed@1.0.0" in page.get_by_role("status").inner_text()
    listed = httpx.get(f"{server}/v1/suites", headers=site.h.other).json()
    assert any(s["name"] == "reviewed" and s["approved"] for s in listed)
    asked = page.get_by_role("region", name=re.compile(r"Request \d+: acme"))
    assert "max_query_budget" in asked.inner_text() and "one full pass" in asked.inner_text()
    asked.get_by_label(re.compile("Reason to grant")).fill("a one-off, for their paper")
    asked.get_by_role("button", name=re.compile("Grant request")).click()
    page.wait_for_url(re.compile(r".*done=granted.*"))
    assert "is granted" in page.get_by_role("status").inner_text()
    job = httpx.get(f"{server}/v1/jobs/{r.json()['id']}", headers=site.h.partner).json()
    assert job["approval"]["state"] == "granted"


def test_the_queue_and_the_usage_chart(page, server: str, site: Seeded, tmp_path: Path, demo_files):  # type: ignore[no-untyped-def]
    h = site.h
    log = "Traceback (most recent call last):\n  File \"main.py\", line 3, in <module>\nKeyError: 'probabilities'"
    failed = submit(server, h.other, metrics=["log_loss"]).json()["id"]
    assert runner.run_job(context(h, StubSandbox(crashed_outcome(log))), failed) == JobState.FAILED
    running = submit(server, h.other, metrics=["accuracy", "log_loss"]).json()["id"]
    sign_in(page, server, h.operator)
    with held_running(h, running, released_outcome(demo_files["data"])) as worker:
        page.goto(f"{server}/site/console/queue")
        assert page.get_by_role("link", name=site.unreleased[:8]).is_visible()  # acme's job, still waiting
        held = page.locator("table[aria-labelledby=running] tbody tr")
        assert running[:8] in held.inner_text() and worker.leases.owner in held.inner_text()
        page.get_by_text(f"Log of {failed[:8]}").click()
        assert "KeyError: 'probabilities'" in page.locator("pre.log").inner_text()
        screenshot(page, "console-queue", tmp_path)
    page.goto(f"{server}/site/console/usage")
    assert page.locator("svg.chart.usage polyline").count() == 2
    page.get_by_label("Show").select_option("bits")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r".*measure=bits"))
    assert page.get_by_role("heading", name="Leakage bits charged per day, per partner").is_visible()
    page.get_by_text("The chart's data, as a table").click()
    assert page.locator("table.usage-data tbody tr").count() == 30
    screenshot(page, "console-usage", tmp_path)
