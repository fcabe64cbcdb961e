"""The results site through HTTP, as a browser without JavaScript sees it: sign-in and its cookie,
CSRF, what each role may see, the leaderboard's sorting, filters, exports and chart, job pages."""

from __future__ import annotations

import csv
import io
import logging
import re
from datetime import datetime
from http.cookies import SimpleCookie

import pytest

from service.auth import service as auth_service
from service.ledger import service as ledger
from service.site import sessions
from service.site.models import SiteSession
from tests import factories
from tests.site.pages import BOARD, csrf_of, job_links, key_of, sign_in
from tests.site.seed import Seeded


def cookie_attributes(set_cookie: str) -> dict[str, str]:
    morsel = next(iter(SimpleCookie(set_cookie).values()))
    return {k: str(v) for k, v in morsel.items() if v}


def test_pages_need_a_session_and_send_a_person_to_sign_in(site: Seeded):
    c = site.h.client
    c.cookies.clear()
    for path in ("/site/", f"/site/jobs/{site.released['acme-1']}", "/site/leaderboard?suite=x&dataset=y"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/site/sign-in?next=%2Fsite%2F"), path
    page = c.get("/site/sign-in")
    assert page.status_code == 200 and '<label for="key">API key</label>' in page.text
    assert "Content-Security-Policy" in page.headers and page.headers["cache-control"] == "no-store"


def test_sign_in_sets_a_strict_httponly_cookie_that_expires_with_the_key(site: Seeded):
    c = site.h.client
    short = site.h.key("newton", "researcher", expires="1h")
    r = sign_in(c, short)
    attrs = cookie_attributes(r.headers["set-cookie"].split(", evalgate_sign_in")[0])
    assert attrs["httponly"] and attrs["samesite"] == "strict" and attrs["path"] == "/site"
    assert "secure" not in attrs  # plain HTTP here; see the HTTPS test below
    assert 3500 <= int(attrs["max-age"]) <= 3600  # the key's hour, not the session's 12 hours
    assert key_of(short) not in r.headers.get("location", "") + r.headers["set-cookie"]
    assert c.get("/site/").status_code == 200


def test_the_cookie_is_secure_over_https(site: Seeded):
    from fastapi.testclient import TestClient

    with TestClient(site.h.client.app, base_url="https://testserver") as secure:
        page = secure.get("/site/sign-in")
        assert "secure" in cookie_attributes(page.headers["set-cookie"])
        r = secure.post(
            "/site/sign-in",
            data={"csrf": csrf_of(page.text), "key": key_of(site.h.researcher)},
            follow_redirects=False,
        )
        assert r.status_code == 303 and "secure" in cookie_attributes(
            r.headers["set-cookie"].split(", evalgate_sign_in")[0]
        )


def test_a_post_without_the_csrf_token_is_refused(site: Seeded):
    c = site.h.client
    c.cookies.clear()
    c.get("/site/sign-in")  # the sign-in cookie is there, the form's token is not sent
    r = c.post("/site/sign-in", data={"key": key_of(site.h.researcher)}, follow_redirects=False)
    assert r.status_code == 403 and "form token" in r.text and sessions.COOKIE not in r.headers.get("set-cookie", "")
    r = c.post("/site/sign-in", data={"key": key_of(site.h.researcher), "csrf": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    sign_in(c, site.h.researcher)
    r = c.post("/site/sign-out", data={}, follow_redirects=False)
    assert r.status_code == 403
    r = c.post("/site/sign-out", data={"csrf": "x" * 43}, follow_redirects=False)
    assert r.status_code == 403
    assert c.get("/site/", follow_redirects=False).status_code == 200  # still signed in


def test_sign_out_ends_the_session_on_the_server(site: Seeded):
    c = site.h.client
    sign_in(c, site.h.researcher)
    token = c.cookies.get(sessions.COOKIE)
    home = c.get("/site/")
    r = c.post("/site/sign-out", data={"csrf": csrf_of(home.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/site/sign-in?signed_out=1"
    c.cookies.set(sessions.COOKIE, token, path="/site")  # a copy of the cookie kept by someone
    assert c.get("/site/", follow_redirects=False).status_code == 303
    with site.h.db() as s:
        assert s.query(SiteSession).filter_by(token_sha256=sessions._digest(token)).count() == 0


def test_revoking_the_key_ends_its_sessions(site: Seeded):
    c = site.h.client
    headers = site.h.key("hopper", "researcher")
    sign_in(c, headers)
    assert c.get("/site/", follow_redirects=False).status_code == 200
    with site.h.db() as s:
        auth_service.revoke_key(s, key_of(headers).split("_")[1])
    assert c.get("/site/", follow_redirects=False).status_code == 303


def test_bad_keys_get_a_message_and_are_rate_limited_like_the_api(tmp_path, demo_files):
    from tests.harness import harness

    for h in harness(factories.settings(tmp_path / "data", auth_failures_per_minute=3), demo_files):
        c = h.client
        bad = "eg_AAAAAAAAAAAAAAAA_" + "x" * 43
        answers = []
        for _ in range(5):
            page = c.get("/site/sign-in")
            answers.append(c.post("/site/sign-in", data={"csrf": csrf_of(page.text), "key": bad}))
        assert [r.status_code for r in answers] == [401] * 3 + [429] * 2
        assert "was not recognised" in answers[0].text
        assert "Retry-After" in answers[-1].headers and "Try again in" in answers[-1].text
        # The API's limiter and the site's are one: the address is refused on the API too.
        assert c.get("/v1/whoami", headers=factories.bearer(bad)).status_code == 429
        with h.db() as s:
            denials = ledger.events_for(s, "route:POST /site/sign-in")
        assert [e["data"]["reason"] for e in denials] == ["invalid_key"] * 3


def test_keys_never_reach_the_logs(site: Seeded, caplog: pytest.LogCaptureFixture):
    headers = site.h.key("lovelace", "researcher")
    with caplog.at_level(logging.DEBUG):
        sign_in(site.h.client, headers)
        site.h.client.get("/site/")
    assert key_of(headers) not in caplog.text
    assert key_of(headers).split("_", 2)[2] not in caplog.text  # the secret (it may hold "_" itself)


def board(site: Seeded, headers: dict[str, str], **params: str) -> str:
    sign_in(site.h.client, headers)
    r = site.h.client.get("/site/leaderboard", params={**BOARD, **params})
    assert r.status_code == 200, r.text
    return r.text


def board_rows(html: str) -> list[str]:
    """The job ids of the leaderboard table's rows, in order."""
    return job_links(html.split("<tbody>", 1)[1].split("</tbody>", 1)[0])


def test_researchers_see_every_release_under_pseudonyms_never_names(site: Seeded):
    html = board(site, site.h.researcher)
    assert sorted(board_rows(html)) == sorted(site.released.values()) and site.unreleased not in html
    assert "acme" not in html and "globex" not in html  # partners by pseudonym only
    assert len(set(re.findall(r"partner-[0-9a-f]{10}", html))) == 2
    assert "± 0.00333" in html and "ε 0.5" in html  # noise as ± scale and ε
    assert '<svg class="chart"' in html and html.count('class="dot"') == 2  # one point per model version


def test_a_partner_sees_only_its_own_releases(site: Seeded):
    html = board(site, site.h.partner)
    assert set(board_rows(html)) == {site.released["acme-1"], site.released["acme-2"]}
    assert site.released["globex-1"] not in html and "ece" not in html  # globex's metric column too
    html = board(site, site.h.other)
    assert board_rows(html) == [site.released["globex-1"]]


def test_sorting_by_a_metric_orders_the_rows_and_puts_missing_values_last(site: Seeded):
    values = {}
    with site.h.db() as s:
        from service.release import service as release_service

        for job_id in site.released.values():
            values[job_id] = release_service.existing(s, job_id).metrics.get("macro_f1")
    for order in ("asc", "desc"):
        html = board(site, site.h.researcher, sort="macro_f1", order=order)
        rows = board_rows(html)
        with_value = [j for j in rows if values[j] is not None]
        assert [values[j] for j in with_value] == sorted((values[j] for j in with_value), reverse=order == "desc")
        assert rows[-1] == site.released["globex-1"]  # asked no macro_f1
        assert 'aria-sort="ascending"' in html if order == "asc" else 'aria-sort="descending"' in html


def test_filters_by_model_and_partner(site: Seeded):
    html = board(site, site.h.researcher, model="demo-classifier@2")
    assert re.search(
        r'<select id="f-suite" name="suite">\s*<option value="evalgate/classification@2.0.0" selected>', html
    )
    assert '<label for="f-dataset">Dataset</label>' in html
    assert board_rows(html) == [site.released["acme-2"]]
    partner = re.findall(r'<option value="(partner-[0-9a-f]{10})"', html)
    assert len(partner) == 2
    html = board(site, site.h.researcher, partner=partner[0], until="2000-01-01")
    assert "No released result matches these filters" in html
    assert "not a date" in board_error(site, since="yesterday")


def board_error(site: Seeded, **params: str) -> str:
    return site.h.client.get("/site/leaderboard", params={**BOARD, **params}).text


def test_exports_are_the_filtered_rows_as_csv_and_json(site: Seeded):
    sign_in(site.h.client, site.h.researcher)
    r = site.h.client.get("/site/leaderboard.csv", params={**BOARD, "sort": "accuracy"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["job_id"] for row in rows} == set(site.released.values())
    assert [float(row["accuracy"]) for row in rows] == sorted((float(row["accuracy"]) for row in rows), reverse=True)
    assert all(row["accuracy.epsilon"] == "0.5" and float(row["accuracy.noise_scale"]) > 0 for row in rows)
    doc = site.h.client.get("/site/leaderboard.json", params={**BOARD, "model": "demo-classifier@2"}).json()
    assert [row["job_id"] for row in doc["rows"]] == [site.released["acme-2"]]
    assert doc["suite"] == BOARD["suite"] and "macro_f1" in doc["metrics"]


def test_a_job_page_shows_the_servers_verification_and_the_verify_command(site: Seeded):
    job_id = site.released["acme-1"]
    sign_in(site.h.client, site.h.researcher)
    html = site.h.client.get(f"/site/jobs/{job_id}").text
    assert "✔ Verified by the server" in html and "<strong>inclusion</strong>:\n    verified" in html
    assert f"evalgate verify {job_id}.json --key " in html
    assert "has not been reproduced yet" in html and "sha256:sidecar" in html
    # A partner: its own job, the signature checked, the log's position not shown.
    sign_in(site.h.client, site.h.partner)
    html = site.h.client.get(f"/site/jobs/{job_id}").text
    assert "✔ Verified by the server" in html and "not shown to partners" in html
    assert "entry " not in html and "Started" not in html  # no log position, no real start


def test_a_researcher_cannot_see_unreleased_jobs_or_raw_values(site: Seeded):
    sign_in(site.h.client, site.h.researcher)
    r = site.h.client.get(f"/site/jobs/{site.unreleased}")
    assert r.status_code == 404 and "Job not found" in r.text and "log_loss" not in r.text
    with site.h.db() as s:
        from service.jobs.models import Job

        assert s.get(Job, site.released["acme-1"]).result_raw is None
    sign_in(site.h.client, site.h.partner)  # its own queued job: shown as the API shows it, running
    r = site.h.client.get(f"/site/jobs/{site.unreleased}")
    assert r.status_code == 200 and "<strong>running</strong>" in r.text
    sign_in(site.h.client, site.h.other)  # another partner's job: not found, as in the API
    assert site.h.client.get(f"/site/jobs/{site.released['acme-1']}").status_code == 404


def test_unknown_pages_and_boards_are_explained(site: Seeded):
    sign_in(site.h.client, site.h.researcher)
    r = site.h.client.get("/site/no/such/page")
    assert r.status_code == 404 and "Page not found" in r.text and "<!doctype html>" in r.text
    r = site.h.client.get("/site/leaderboard", params={"suite": "nobody/nothing@1", "dataset": "x@1"})
    assert r.status_code == 404 and "No such leaderboard" in r.text
    assert site.h.client.get("/site/static/site.css").headers["content-type"].startswith("text/css")
    assert site.h.client.get("/site/static/../main.py").status_code == 404


def test_an_empty_site_says_so(tmp_path, demo_files):
    from tests.harness import harness

    for h in harness(factories.settings(tmp_path / "data"), demo_files):
        sign_in(h.client, h.researcher)
        assert "No released results yet" in h.client.get("/site/").text


def test_a_form_over_its_limit_is_refused_unread(site: Seeded):
    r = site.h.client.post(
        "/site/sign-in", content=b"key=" + b"a" * 5000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


def test_a_page_shows_what_the_api_answers_the_same_caller(site: Seeded):
    """The export's values and dates against GET /v1/jobs/{id} for the same key: the same metrics,
    the same release time (a partner's padded one)."""
    for headers in (site.h.researcher, site.h.partner):
        sign_in(site.h.client, headers)
        doc = site.h.client.get("/site/leaderboard.json", params=BOARD).json()
        assert doc["rows"]
        for row in doc["rows"]:
            api = site.h.client.get(f"/v1/jobs/{row['job_id']}", headers=headers).json()["result"]
            assert {m: row[m] for m in doc["metrics"] if row[m] is not None} == api["metrics"]
            assert datetime.fromisoformat(row["released_at"]) == datetime.fromisoformat(api["released_at"])


def test_pages_of_a_long_board(site: Seeded):
    from service.auth.roles import Role
    from service.auth.service import Caller
    from service.site import leaderboard

    with site.h.db() as s:
        suite, dataset = leaderboard.find_board(s, *BOARD.values())
        researcher = Caller(0, "curie", Role.RESEARCHER, "k")
        by_date = [
            leaderboard.page(s, researcher, [0.25], b"s" * 32, suite, dataset, leaderboard.Filters(page=n), page_size=1)
            for n in (1, 2, 3, 99)
        ]
    assert [p.pages for p in by_date] == [3] * 4 and [p.total for p in by_date] == [3] * 4
    ids = [p.rows[0].job_id for p in by_date]
    assert len(set(ids[:3])) == 3 and ids[3] == ids[2]  # past the last page: the last
    assert [p.rows[0].released_at for p in by_date[:3]] == sorted(
        (p.rows[0].released_at for p in by_date[:3]), reverse=True
    )


def test_a_partner_sees_a_release_only_from_its_padded_time_and_new_metrics_appear(tmp_path, demo_files):
    from tests.harness import harness
    from tests.site.seed import release

    settings = factories.settings(tmp_path / "data", timing_buckets_s=[3600])
    for h in harness(settings, demo_files):
        job_id = release(h, demo_files, h.partner, metrics=["accuracy"])
        sign_in(h.client, h.researcher)
        assert board_rows(h.client.get("/site/leaderboard", params=BOARD).text) == [job_id]
        sign_in(h.client, h.partner)
        assert "No released results yet" in h.client.get("/site/").text  # its job ends in an hour, for it
        page = h.client.get(f"/site/jobs/{job_id}").text
        assert "<strong>running</strong>" in page and "Nothing has been released" in page
        assert h.client.get(f"/v1/jobs/{job_id}", headers=h.partner).json()["state"] == "running"
        # Nor does any list of the board tell it: its metric names, its suites and datasets, its models.
        doc = h.client.get("/site/leaderboard.json", params=BOARD).json()
        assert doc["rows"] == [] and doc["metrics"] == [], doc
        board_page = h.client.get("/site/leaderboard", params=BOARD).text
        assert 'data-sort="accuracy"' not in board_page and "demo-classifier@1</option>" not in board_page
        sign_in(h.client, h.researcher)  # a release with another metric: its column appears at once
        h.client.get("/site/leaderboard", params=BOARD)
        release(h, demo_files, h.other, metrics=["accuracy", "log_loss"])
        assert 'data-sort="log_loss"' in h.client.get("/site/leaderboard", params=BOARD).text


@pytest.mark.postgres
def test_the_site_on_postgres(tmp_path, demo_files, postgres_url):
    from tests.site.seed import seeded, site_settings

    for seed in seeded(site_settings(tmp_path / "data", database_url=postgres_url), demo_files):
        for order in ("asc", "desc"):
            html = board(seed, seed.h.researcher, sort="macro_f1", order=order)
            assert sorted(board_rows(html)) == sorted(seed.released.values())
            assert board_rows(html)[-1] == seed.released["globex-1"]  # no macro_f1: last either way
        assert board_rows(board(seed, seed.h.researcher, sort="model", model="demo-classifier@2")) == [
            seed.released["acme-2"]
        ]
        doc = seed.h.client.get("/site/leaderboard.json", params={**BOARD, "since": "2000-01-01"}).json()
        assert {r["job_id"] for r in doc["rows"]} == set(seed.released.values())
        page = seed.h.client.get(f"/site/jobs/{seed.released['acme-1']}").text
        assert "✔ Verified by the server" in page
        assert set(board_rows(board(seed, seed.h.partner))) == {seed.released["acme-1"], seed.released["acme-2"]}
