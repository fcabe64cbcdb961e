"""Reproductions on the job page: in Chromium, an operator asks for one with the page's form and
sees its outcome; through an HTTP client, who is offered the form and what a form without its
CSRF token does."""

from __future__ import annotations

import re
from pathlib import Path

from service.jobs import runner
from service.jobs.states import JobState
from service.reproductions.models import Reproduction
from tests.site.browser import screenshot
from tests.site.pages import csrf_of, key_of, sign_in
from tests.site.seed import Seeded
from tests.stubs import StubSandbox, context, released_outcome


def reproductions_of(site: Seeded, job_id: str) -> list[Reproduction]:
    with site.h.db() as s:
        return list(s.query(Reproduction).filter(Reproduction.job_id == job_id))


def browser_sign_in(page, server: str, headers: dict[str, str], next_page: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server}{next_page}")
    page.get_by_label("API key").fill(key_of(headers))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server}{next_page}")


def test_an_operator_reproduces_a_result_from_its_page_and_sees_the_outcome(  # type: ignore[no-untyped-def]
    page, server: str, site: Seeded, demo_files: dict[str, Path], tmp_path: Path
):
    job_id = site.released["acme-1"]
    browser_sign_in(page, server, site.h.operator, f"/site/jobs/{job_id}")
    section = page.locator("section[aria-labelledby=repro]")
    assert "This result has not been reproduced yet" in section.inner_text()
    section.get_by_role("button", name="Reproduce this result").click()
    page.wait_for_url(re.compile(rf".*/site/jobs/{job_id}(#repro)?$"))
    assert "In progress" in page.locator("table.reproductions").inner_text()
    [asked] = reproductions_of(site, job_id)
    # The server under the browser hands runs to a recording dispatcher: the test is the worker.
    sandbox = StubSandbox(released_outcome(demo_files["data"]))
    assert runner.run_job(context(site.h, sandbox), asked.id) == JobState.COMPARED
    page.reload()
    row = page.locator("table.reproductions tbody tr").first
    assert "✔ Reproduced" in row.inner_text() and "ops (operator)" in row.inner_text()
    screenshot(page, "reproduction", tmp_path)


def test_the_form_is_offered_to_those_who_may_ask_and_needs_its_token(site: Seeded):
    client, job_id = site.h.client, site.released["globex-1"]
    sign_in(client, site.h.researcher)  # researchers may not ask here (the deployment's default)
    html = client.get(f"/site/jobs/{job_id}").text
    assert "Reproduce this result" not in html and "Reproductions" in html
    r = client.post(f"/site/jobs/{job_id}/reproduce", data={"csrf": csrf_of(html)}, follow_redirects=False)
    assert r.status_code == 403 and "not started" in r.text
    sign_in(client, site.h.operator)
    html = client.get(f"/site/jobs/{job_id}").text
    assert "Reproduce this result" in html
    r = client.post(f"/site/jobs/{job_id}/reproduce", data={"csrf": "forged"}, follow_redirects=False)
    assert r.status_code == 403 and "This form could not be accepted" in r.text
    assert reproductions_of(site, job_id) == []
    r = client.post(f"/site/jobs/{job_id}/reproduce", data={"csrf": csrf_of(html)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/site/jobs/{job_id}#repro"
    assert len(reproductions_of(site, job_id)) == 1
    r = client.post(f"/site/jobs/{job_id}/reproduce", data={"csrf": csrf_of(html)}, follow_redirects=False)
    assert r.status_code == 409 and "on its way" in r.text  # one at a time
