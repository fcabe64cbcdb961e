"""Fixtures of the site's tests: a seeded API (tests/site/seed.py), and for the browser tests the
same app under uvicorn with Debian's Chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.site.seed import Seeded, seeded, site_settings


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, demo_files: dict[str, Path]) -> Iterator[Seeded]:
    yield from seeded(site_settings(tmp_path_factory.mktemp("site") / "data"), demo_files)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the test, so the browser fixture knows whether to take a screenshot."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def server(site: Seeded) -> Iterator[str]:
    """The seeded site's app under uvicorn on a free loopback port; its URL."""
    from tests.site.browser import server

    with server(site.h.settings) as running:
        yield running.url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from tests.site.browser import chromium

    yield from chromium()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A fresh browser context (no cookies) and page; a screenshot in the test's tmp dir if it fails."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failure: {shot}")
    context.close()
