"""The operators' console through HTTP, as a browser without JavaScript sees it: who may open it, the
partners' usage against the API's own numbers, changing a limit with a reason (the API's validation and
version check), keys shown once, the queue with leases and operator logs, suites' files, the usage chart."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from service.auth import repository as auth_repo
from service.jobs import runner
from service.jobs.models import Job
from service.jobs.states import JobState
from service.site.console.partners import show
from tests import factories
from tests.site.pages import csrf_of, key_of, sign_in
from tests.site.seed import Seeded
from tests.stubs import StubSandbox, context, crashed_outcome, held_running, released_outcome

PAGES = ("/site/console/", "/site/console/partners/acme", "/site/console/usage", "/site/console/queue")
MORE_PAGES = ("/site/console/approvals", "/site/console/keys")


def operator_page(site: Seeded, path: str, **params: Any) -> str:
    sign_in(site.h.client, site.h.operator)
    r = site.h.client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.text


def version_of(html: str) -> int:
    m = re.search(r'name="version" value="(\d+)"', html)
    assert m, "no version in the limits form"
    return int(m.group(1))


def limits_form(html: str, **values: str) -> dict[str, str]:
    """The limits form as the page filled it, with `values` typed over it."""
    fields = dict(re.findall(r'<input id="f-[a-z_]+" name="([a-z_]+)" value="([^"]*)"', html))
    modes = {
        f"{n}_mode": "only" if re.search(rf'name="{n}_mode" value="only" checked', html) else "all"
        for n in ("models", "datasets")
    }
    return {"csrf": csrf_of(html), "version": str(version_of(html)), **fields, **modes, "reason": "", **values}


def test_console_pages_are_for_operators_only(site: Seeded):
    c = site.h.client
    c.cookies.clear()
    for path in PAGES + MORE_PAGES:
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/site/sign-in?next="), path
    for headers in (site.h.researcher, site.h.partner):
        sign_in(c, headers)
        assert 'href="/site/console/"' not in c.get("/site/").text  # no Console in their navigation
        for path in PAGES + MORE_PAGES:
            r = c.get(path)
            assert r.status_code == 404 and "Page not found" in r.text, path  # as any unknown address
            assert "acme's limits" not in r.text and "Queue" not in r.text
    sign_in(c, site.h.operator)
    assert 'href="/site/console/"' in c.get("/site/").text
    for path in PAGES + MORE_PAGES:
        assert c.get(path).status_code == 200, path


def test_a_partner_cannot_send_a_console_form(site: Seeded):
    c = site.h.client
    sign_in(c, site.h.partner)
    csrf = csrf_of(c.get("/site/").text)  # its own session's token: valid, but not an operator's
    r = c.post("/site/console/keys/create", data={"csrf": csrf, "name": "mallory", "role": "operator", "expires": "7d"})
    assert r.status_code == 404
    with site.h.db() as s:
        assert auth_repo.principal_by_name(s, "mallory") is None


def meters(html: str, partner: str) -> dict[str, str]:
    """The bars of one partner's row: their accessible names -> 'used of limit'."""
    row = re.search(rf'<th scope="row">{partner}.*?</tr>', html, re.S)
    assert row, f"no row for {partner}"
    return dict(re.findall(r'<meter [^>]*aria-label="([^":]+): ([^"]+)"', row.group(0)))


def test_the_partners_page_shows_each_partners_use_as_the_api_counts_it(site: Seeded):
    html = operator_page(site, "/site/console/")
    for name, headers in (("acme", site.h.partner), ("globex", site.h.other)):
        budget = site.h.budget(headers)
        bars = meters(html, name)
        for label, used, limit in [
            ("Leakage bits today", budget["leakage_bits"]["used"], budget["leakage_bits"]["limit"]),
            ("Model rows today", budget["model_rows"]["used"], budget["model_rows"]["limit"]),
            ("Jobs in progress", budget["concurrent_jobs"]["active"], budget["concurrent_jobs"]["limit"]),
            *[(f"ε on {e['dataset']}", e["spent"], e["budget"]) for e in budget["epsilon"]],
        ]:
            assert bars.pop(label) == f"{show(used)} of {show(limit)}", (name, label)
        assert not bars  # no bar the API does not count
        assert budget["model_rows"]["used"] > 0 and budget["epsilon"]  # the seed's releases used both
    assert meters(html, "acme")["Jobs in progress"].startswith("1 of")  # its queued job
    assert 'href="/site/console/partners/acme"' in html


def refused_today(html: str, partner: str) -> int:
    row = re.search(rf'<th scope="row">{partner}.*?</tr>', html, re.S)
    assert row
    return int(re.findall(r'<td class="num">(\d+)</td>', row.group(0))[-1])


def test_refusals_today_count_the_partners_refused_submissions(site: Seeded):
    before = refused_today(operator_page(site, "/site/console/"), "globex")
    r = site.h.post_job(site.h.other, resources={"query_budget": 10**13})
    assert r.json()["error"] == "resources_exceed_limit", r.text
    html = operator_page(site, "/site/console/")
    assert refused_today(html, "globex") == before + 1


def test_an_operator_changes_a_limit_with_a_reason_and_the_next_submission_sees_it(site: Seeded):
    c = site.h.client
    page = operator_page(site, "/site/console/partners/acme")
    assert "No operator has changed acme's limits yet" in page
    version = version_of(page)
    r = c.post(
        "/site/console/partners/acme",
        data=limits_form(page, max_concurrent_jobs="1", reason="acme is over-using the workers"),
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/site/console/partners/acme?saved=1", r.text
    page = c.get(r.headers["location"]).text
    assert "Saved." in page and version_of(page) == version + 1
    history = page.split('id="history"', 1)[1]
    assert "operator:ops" in history and "acme is over-using the workers" in history
    assert "Jobs in progress: default → <strong>1</strong>" in history
    # The API reads what the form wrote, at the version the page shows, with the same history.
    api = c.get("/v1/policies/partners/acme", headers=site.h.operator)
    assert api.json()["limits"]["max_concurrent_jobs"] == 1 and api.headers["etag"] == f'"{version + 1}"'
    changes = c.get("/v1/policies/partners/acme/history", headers=site.h.operator).json()
    assert changes[0]["reason"] == "acme is over-using the workers" and changes[0]["changed"] == ["max_concurrent_jobs"]
    # acme has one job in progress, so its next submission is refused; raising the limit lets it in.
    r = site.h.post_job(site.h.partner, resources={"query_budget": 1000}, metrics=["ece"])
    assert r.status_code == 429 and r.json()["error"] == "too_many_concurrent_jobs", r.text
    page = c.get("/site/console/partners/acme").text
    r = c.post(
        "/site/console/partners/acme",
        data=limits_form(page, max_concurrent_jobs="", reason="back to the default"),
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = site.h.post_job(site.h.partner, resources={"query_budget": 1000}, metrics=["ece"])
    assert r.status_code == 202, r.text


def test_a_stale_form_is_refused_and_shows_what_is_there_now(site: Seeded):
    c = site.h.client
    stale = operator_page(site, "/site/console/partners/globex")
    version = version_of(stale)
    r = c.put(
        "/v1/policies/partners/globex",
        headers={**site.h.operator, "If-Match": f'"{version}"'},
        json={"bits_per_day": 512, "reason": "another operator, through the API"},
    )
    assert r.status_code == 200, r.text
    r = c.post(
        "/site/console/partners/globex",
        data=limits_form(stale, bits_per_day="9999", reason="mine, from an old page"),
        follow_redirects=False,
    )
    assert r.status_code == 412 and "Nothing was saved" in r.text
    assert version_of(r.text) == version + 1 and 'name="bits_per_day" value="512"' in r.text  # as it is now
    assert "9999" in r.text.split("What you asked for", 1)[1]  # what the operator typed is not lost
    api = c.get("/v1/policies/partners/globex", headers=site.h.operator).json()
    assert api["limits"]["bits_per_day"] == 512 and api["version"] == version + 1  # not overwritten


def test_the_form_is_validated_like_the_api(site: Seeded):
    c = site.h.client
    page = operator_page(site, "/site/console/partners/globex")
    version = version_of(page)
    cases = [
        ({"rows_per_day": "lots", "reason": "x"}, "Model rows per day: Input should be a valid integer"),
        (
            {"max_epsilon_per_metric": "0", "reason": "x"},
            "Most ε per metric: Input should be greater than or equal to 0.000001",
        ),
        ({"rows_per_day": "10"}, "Say why you are making this change"),
        ({"models_mode": "only", "models": "no-such-model", "reason": "x"}, "no model no-such-model is registered"),
    ]
    for typed, message in cases:
        r = c.post("/site/console/partners/globex", data=limits_form(page, **typed), follow_redirects=False)
        assert r.status_code == 422 and message in r.text, (typed, r.text[-2000:])
        assert "The limits were not changed" in r.text
    assert c.get("/v1/policies/partners/globex", headers=site.h.operator).json()["version"] == version


def test_console_forms_without_the_csrf_token_do_nothing(site: Seeded):
    c = site.h.client
    page = operator_page(site, "/site/console/partners/globex")
    version = version_of(page)
    forged = {k: v for k, v in limits_form(page, bits_per_day="1", reason="forged").items() if k != "csrf"}
    posts: list[tuple[str, dict[str, str]]] = [
        ("/site/console/partners/globex", forged),
        ("/site/console/partners/globex", {**forged, "csrf": "x" * 43}),
        ("/site/console/keys/create", {"name": "forger", "role": "operator", "expires": "7d"}),
        ("/site/console/keys/revoke", {"key_id": key_of(site.h.other).split("_")[1]}),
        ("/site/console/approvals/suite", {"suite": "acme/nothing@1.0.0"}),
    ]
    for path, data in posts:
        r = c.post(path, data=data, follow_redirects=False)
        assert r.status_code == 403 and "This form could not be accepted" in r.text, path
    assert c.get("/v1/policies/partners/globex", headers=site.h.operator).json()["version"] == version
    assert c.get("/v1/whoami", headers=site.h.other).status_code == 200  # not revoked
    with site.h.db() as s:
        assert auth_repo.principal_by_name(s, "forger") is None


def secret_of(html: str) -> str:
    m = re.search(r'<pre class="secret" id="secret"[^>]*>(eg_[A-Za-z0-9]{16}_[A-Za-z0-9_-]{43})</pre>', html)
    assert m, "no secret on the page"
    return m.group(1)


def test_keys_are_shown_once_and_never_logged(site: Seeded, caplog: pytest.LogCaptureFixture):
    c = site.h.client
    page = operator_page(site, "/site/console/keys")
    with caplog.at_level(logging.DEBUG):
        r = c.post(
            "/site/console/keys/create",
            data={"csrf": csrf_of(page), "name": "turing", "role": "researcher", "expires": "7d"},
            follow_redirects=False,
        )
        assert r.status_code == 200 and "location" not in r.headers and r.headers["cache-control"] == "no-store"
        key = secret_of(r.text)
        assert c.get("/v1/whoami", headers=factories.bearer(key)).json()["name"] == "turing"
        listing = c.get("/site/console/keys").text
        key_id = key.split("_")[1]
        assert key_id in listing and key not in listing and key.split("_", 2)[2] not in listing
        # Rotate: a new secret, once; the old key stops at once.
        r = c.post("/site/console/keys/rotate", data={"csrf": csrf_of(listing), "key_id": key_id, "grace": ""})
        assert r.status_code == 200 and f"rotated from {key_id}" in r.text
        rotated = secret_of(r.text)
        assert c.get("/v1/whoami", headers=factories.bearer(key)).status_code == 401
        assert c.get("/v1/whoami", headers=factories.bearer(rotated)).status_code == 200
        # Revoke: the key stops, and the list says so.
        r = c.post(
            "/site/console/keys/revoke",
            data={"csrf": csrf_of(listing), "key_id": rotated.split("_")[1]},
            follow_redirects=False,
        )
        assert r.status_code == 303 and c.get("/v1/whoami", headers=factories.bearer(rotated)).status_code == 401
        assert "is revoked" in c.get(r.headers["location"]).text
    for secret in (key, rotated):
        assert secret.split("_", 2)[2] not in caplog.text
    r = c.post(
        "/site/console/keys/create",
        data={"csrf": csrf_of(listing), "name": "Bad Name", "role": "partner", "expires": "7d"},
    )
    assert r.status_code == 422 and "No key was created" in r.text and "eg_" not in r.text


def test_the_queue_shows_waiting_and_running_jobs_and_failed_ones_with_their_logs(site: Seeded, demo_files):
    h = site.h
    crashed = crashed_outcome(
        "Traceback (most recent call last):\n  <script>boom()</script>\nValueError: the partner's bug"
    )
    failed = h.post_job(h.other, resources={"query_budget": 1000}, metrics=["log_loss"]).json()["id"]
    assert runner.run_job(context(h, StubSandbox(crashed)), failed) == JobState.FAILED
    running = h.post_job(h.other, resources={"query_budget": 1000}, metrics=["accuracy", "log_loss"]).json()["id"]
    with held_running(h, running, released_outcome(demo_files["data"])) as worker:
        html = operator_page(site, "/site/console/queue")
    waiting, held, ended = (
        html.split('id="waiting"')[1].split('id="running"')[0],
        html.split('id="running"')[1].split('id="failed"')[0],
        html.split('id="failed"')[1],
    )
    assert site.unreleased[:8] in waiting and running[:8] not in waiting
    assert running[:8] in held and worker.leases.owner in held and "running" in held
    assert re.search(r'<td class="num">\d+ (s|min)</td>', held)  # its age
    assert failed[:8] in ended and "crashed" in ended
    assert "&lt;script&gt;boom()&lt;/script&gt;" in ended and "<script>boom" not in ended  # escaped
    assert "the partner&#39;s bug" in ended
    with h.db() as s:
        assert s.get(Job, running).state == JobState.RELEASED
    # Partners never see the log: not on their job page, not in the API.
    sign_in(h.client, h.other)
    assert "the partner" not in h.client.get(f"/site/jobs/{failed}").text
    assert "the partner" not in h.client.get(f"/v1/jobs/{failed}", headers=h.other).text


def test_the_approvals_page_lists_a_waiting_suites_files_and_approves_it(site: Seeded):
    h = site.h
    code = "print('<b>hello</b>')\n" + "# padding\n" * 8000  # past the 64 KiB a file is shown
    bundle = factories.tar_gz(
        {
            "suite.yaml": factories.manifest("inspect-me", ["score"]),
            "main.py": code,
            "helpers/util.py": "def f():\n    return '&amp;'\n",
            "weights.bin": bytes(range(256)) * 4,
        }
    )
    suite = h.upload_suite(bundle, approve=False, headers=h.partner)
    assert not suite["approved"]
    ref = "acme/inspect-me@1.0.0"
    job = h.submit(ref, ["score"], headers=h.partner, resources={"query_budget": 1000})
    assert job["state"] in ("awaiting_approval", "running")  # a partner sees it as running
    html = operator_page(site, "/site/console/approvals")
    section = html.split('<h3 id="suite-')[1]
    assert ref in section and "<dt>Jobs waiting for it</dt><dd>1</dd>" in section
    for path in ("suite.yaml", "main.py", "helpers/util.py", "weights.bin"):
        assert f"<td><code>{path}</code></td>" in section
    assert "print(&#39;&lt;b&gt;hello&lt;/b&gt;&#39;)" in section and "<b>hello</b>" not in section
    assert "return &#39;&amp;amp;&#39;" in section
    assert "Cut short: only the start of this file is shown" in section
    assert "Not text (not UTF-8, or holds a NUL byte): 1,024 bytes" in section
    r = h.client.post(
        "/site/console/approvals/suite", data={"csrf": csrf_of(html), "suite": ref}, follow_redirects=False
    )
    assert r.status_code == 303
    page = h.client.get(r.headers["location"]).text
    assert f"Approved {ref}" in page and "No suite is waiting for approval" in page
    assert h.dispatcher is not None and (job["id"], JobState.QUEUED) in h.dispatcher.enqueued
    with h.db() as s:
        from service.ledger import service as ledger

        assert [e["actor"] for e in ledger.events_for(s, f"suite:{ref}", "suite.approved")] == ["operator:ops"]


def test_the_usage_chart_draws_each_partner_and_has_a_table(site: Seeded):
    html = operator_page(site, "/site/console/usage")
    assert '<svg class="chart usage"' in html and 'aria-labelledby="chart-title chart-desc"' in html
    assert html.count("<polyline ") == 2  # acme and globex
    table = html.split('<table class="usage-data">')[1]
    assert '<th scope="col" class="num">acme</th>' in table and table.count("<tr>") == 31  # head + 30 days
    bits = operator_page(site, "/site/console/usage", measure="bits")
    assert "Leakage bits charged per day, per partner" in bits


def test_requests_above_policy_are_granted_or_denied_with_a_reason(site: Seeded):
    h = site.h
    policy = h.client.get("/v1/policies/partners/globex", headers=h.operator)
    r = h.client.put(
        "/v1/policies/partners/globex",
        headers={**h.operator, "If-Match": policy.headers["etag"]},
        json={**policy.json()["set"], "max_query_budget": 500, "reason": "small jobs only"},
    )
    assert r.status_code == 200, r.text
    asked = [
        h.post_job(
            h.other, metrics=metrics, resources={"query_budget": 1000}, request_approval=True, approval_note=note
        ).json()["id"]
        for metrics, note in ((["accuracy"], "one full pass, please"), (["macro_f1"], "<i>another</i>"))
    ]
    html = operator_page(site, "/site/console/approvals")
    requests = html.split('id="requests"', 1)[1]
    ids = re.findall(r'<h3 id="request-(\d+)">Request \d+: globex, job', requests)
    assert len(ids) == 2 and all(j[:8] in requests for j in asked)
    assert "<td>max_query_budget</td><td>1000</td><td>500</td>" in requests
    assert "&lt;i&gt;another&lt;/i&gt;" in requests and "<i>another" not in requests
    by_job = {j: i for j, i in zip(sorted(asked, key=lambda j: requests.index(j[:8])), ids, strict=True)}
    grant, deny = by_job[asked[0]], by_job[asked[1]]
    csrf = csrf_of(html)
    r = h.client.post(f"/site/console/approvals/requests/{grant}/grant", data={"csrf": csrf, "reason": " "})
    assert r.status_code == 422 and "Say why" in r.text  # nothing decided without a reason
    r = h.client.post(
        f"/site/console/approvals/requests/{grant}/grant",
        data={"csrf": csrf, "reason": "a one-off for their paper"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert f"Request {grant} is granted" in h.client.get(r.headers["location"]).text
    assert h.dispatcher is not None and (asked[0], JobState.QUEUED) in h.dispatcher.enqueued
    r = h.client.post(
        f"/site/console/approvals/requests/{deny}/deny",
        data={"csrf": csrf, "reason": "not this week"},
        follow_redirects=False,
    )
    page = h.client.get(r.headers["location"]).text
    assert f"Request {deny} is denied" in page and "No request above policy is waiting" in page
    with h.db() as s:
        assert s.get(Job, asked[1]).state == JobState.CANCELLED
    r = h.client.post(
        f"/site/console/approvals/requests/{deny}/grant", data={"csrf": csrf, "reason": "changed my mind"}
    )
    assert r.status_code == 409 and f"Request {deny} was not granted" in r.text
