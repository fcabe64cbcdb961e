"""A partner's own pages in Chromium: its jobs, its budget as bars, and the submit form that shows the
dry run's cost before the partner confirms, then the job reaching its end. Who else cannot open them,
and a form without the CSRF token. Saves the partner pages' README screenshots."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import func, select

from service.jobs import runner
from service.jobs.models import Job
from service.jobs.states import JobState
from tests.factories import manifest, suite_bundle, tar_gz
from tests.site.browser import screenshot
from tests.site.seed import Seeded
from tests.site.test_browser import sign_in
from tests.stubs import StubSandbox, context, released_outcome


def jobs(site: Seeded) -> int:
    with site.h.sessions() as s:
        return s.execute(select(func.count()).select_from(Job)).scalar_one()


def test_submit_shows_the_cost_first_then_the_job_runs_to_its_end(  # type: ignore[no-untyped-def]
    page, server: str, site: Seeded, demo_files: dict[str, Path], tmp_path: Path
):
    sign_in(page, server, site.h.partner)
    page.get_by_role("link", name="My jobs").click()
    page.wait_for_url(f"{server}/site/me/")
    assert page.get_by_role("cell", name="released").count() >= 2  # acme's two releases
    screenshot(page, "partner-jobs", tmp_path)

    page.get_by_role("link", name="My budget").click()
    assert page.locator("meter").count() >= 4
    assert page.get_by_role("row", name="Jobs in progress").count() == 1
    screenshot(page, "partner-budget", tmp_path)

    page.get_by_role("link", name="Submit a job").click()
    page.get_by_label("Metrics").fill("accuracy, ece")
    page.get_by_label("ε per noised metric").fill("0.25")
    before = jobs(site)
    page.get_by_role("button", name="Show the cost").click()
    cost = page.get_by_role("region", name="What this job would cost")
    assert "0.5 in all (0.25 for each of accuracy, ece)" in cost.inner_text()
    assert "It would be admitted now" in cost.inner_text()
    assert jobs(site) == before  # the cost was shown; nothing was submitted
    screenshot(page, "partner-submit", tmp_path)

    page.get_by_role("button", name="Submit it").click()
    page.wait_for_url(f"{server}/site/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]
    assert jobs(site) == before + 1
    with site.h.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.spec["privacy"]["epsilon_total"] == 0.5
    # The job runs (on the stub sandbox, as the seeded ones did) and the partner sees it end.
    assert (
        runner.run_job(context(site.h, StubSandbox(released_outcome(demo_files["data"]))), job_id) == JobState.RELEASED
    )
    for _ in range(20):
        page.reload()
        if "released" in page.locator("main").inner_text():
            break
        page.wait_for_timeout(250)  # its padded completion time (0.25 s buckets here)
    assert "released" in page.locator("main").inner_text()


def test_a_refusal_is_shown_before_anything_is_spent(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.partner)
    page.goto(f"{server}/site/me/submit")
    page.get_by_label("Metrics").fill("acuracy")
    page.get_by_role("button", name="Show the cost").click()
    alert = page.get_by_role("alert")
    assert "undeclared_metric" in alert.inner_text() and "accuracy" in alert.inner_text()
    page.get_by_label("Metrics").fill("accuracy")
    page.get_by_label("ε per noised metric").fill("50")
    page.get_by_role("button", name="Show the cost").click()
    assert "epsilon_above_policy" in page.get_by_role("alert").inner_text()


def test_only_partners_open_these_pages_and_forms_need_the_token(page, server: str, site: Seeded):  # type: ignore[no-untyped-def]
    for who in (site.h.researcher, site.h.operator):
        sign_in(page, server, who)
        for path in ("/site/me/", "/site/me/budget", "/site/me/submit", "/site/me/suites"):
            assert page.goto(f"{server}{path}").status == 404
        page.context.clear_cookies()
    sign_in(page, server, site.h.partner)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    before = jobs(site)
    r = httpx.post(
        f"{server}/site/me/submit",
        cookies=cookies,
        data={"suite": "x", "model": "y", "dataset": "z", "metrics": "accuracy", "action": "confirm"},
    )
    assert r.status_code == 403 and "form token" in r.text and jobs(site) == before


def test_a_suite_uploaded_from_the_page_waits_for_approval(page, server: str, site: Seeded, tmp_path: Path):  # type: ignore[no-untyped-def]
    sign_in(page, server, site.h.partner)
    page.goto(f"{server}/site/me/suites")
    good = tmp_path / "good.tar.gz"
    good.write_bytes(suite_bundle("from-the-page", "import evalgate\nevalgate.report({'score': 1})\n", ["score"]))
    page.get_by_label("Bundle").set_input_files(str(good))
    page.get_by_role("button", name="Upload").click()
    assert "Uploaded acme/from-the-page@1.0.0." in page.get_by_role("status").inner_text()
    row = page.get_by_role("row", name="acme/from-the-page@1.0.0")
    assert "waiting for an operator" in row.inner_text()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(tar_gz({"suite.yaml": manifest("broken", ["score"]), "run.py": ""}))
    page.get_by_label("Bundle").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    alert = page.get_by_role("alert").inner_text()
    assert "bundle_bad_manifest" in alert and "entrypoint: run.py" in alert
    assert page.get_by_role("row", name="acme/broken@1.0.0").count() == 0
