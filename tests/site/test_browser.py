"""The site in Chromium, as a person uses it: sign in, browse and sort a leaderboard, open a job and
see it verified, export CSV; and what the browser is given (cookie flags, CSRF refusals)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from tests.site.browser import screenshot
from tests.site.pages import BOARD, key_of
from tests.site.seed import Seeded


def sign_in(page, server: str, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server}/site/")
    assert page.url.startswith(f"{server}/site/sign-in")
    page.get_by_label("API key").fill(key_of(headers))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server}/site/")


def test_sign_in_browse_sort_open_a_job_and_export(page, server: str, site: Seeded, tmp_path: Path):  # type: ignore[no-untyped-def]
    page.goto(f"{server}/site/sign-in")
    screenshot(page, "sign-in", tmp_path)
    sign_in(page, server, site.h.researcher)
    assert key_of(site.h.researcher) not in page.url
    page.get_by_role("link", name=BOARD["suite"]).click()
    page.wait_for_url(re.compile(r".*/site/leaderboard\?.*"))
    rows = page.locator("table.board tbody tr")
    assert rows.count() == 3
    # Sort by accuracy, ascending, with the keyboard: the header link is reachable and works.
    header = page.locator("table.board thead a[data-sort=accuracy]")
    header.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*sort=accuracy.*order=desc.*"))
    page.locator("table.board thead a[data-sort=accuracy]").click()
    page.wait_for_url(re.compile(r".*sort=accuracy.*order=asc.*"))
    values = [float(v) for v in page.locator("table.board tbody td:nth-child(2) .value").all_inner_texts()]
    assert values == sorted(values) and len(values) == 3
    assert page.locator("th[aria-sort=ascending]").count() == 1
    assert page.locator("svg.chart circle.dot").count() == 2
    screenshot(page, "leaderboard", tmp_path)
    # Export CSV.
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    path = download.value.path()
    exported = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    assert {r["job_id"] for r in exported} == set(site.released.values())
    # Open a job: the server's verification and the command to check it offline.
    page.locator("table.board tbody tr").first.get_by_role("link").last.click()
    page.wait_for_url(re.compile(r".*/site/jobs/.*"))
    assert page.locator("#verdict").inner_text() == "✔ Verified by the server"
    assert "evalgate verify" in page.locator("pre.command").inner_text()
    screenshot(page, "job", tmp_path)


def test_cookie_flags_and_sign_out(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.partner)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["evalgate_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/site"
    assert not session["secure"]  # plain HTTP on loopback; HTTPS sets it (tests/site/test_pages.py)
    assert page.evaluate("document.cookie") == ""  # no script can read it
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/site/sign-in\?signed_out=1"))
    assert "You are signed out" in page.content()
    page.goto(f"{server}/site/")
    assert page.url.startswith(f"{server}/site/sign-in")


def test_a_post_without_the_csrf_token_is_refused(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.researcher)
    page.evaluate("document.querySelector('form.who input[name=csrf]').remove()")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    assert "This form could not be accepted" in page.content()
    page.goto(f"{server}/site/")
    assert page.url == f"{server}/site/"  # still signed in: the forged sign-out did nothing


def test_a_researcher_sees_no_unreleased_job_or_raw_value(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.researcher)
    response = page.goto(f"{server}/site/jobs/{site.unreleased}")
    assert response is not None and response.status == 404
    assert page.get_by_role("heading", name="Job not found").is_visible()
    page.goto(f"{server}/site/leaderboard?suite={BOARD['suite']}&dataset={BOARD['dataset']}")
    assert site.unreleased not in page.content() and "log_loss" not in page.content()
    assert "result_raw" not in page.content()
