"""The site in a real browser: Debian's Chromium (/usr/bin/chromium, installed by .ci/run) driven
by Playwright for Python, never a browser Playwright downloads; the app under uvicorn in a thread."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.config import Settings
from service.demo import LocalServer
from tests.harness import REPO, RecordingDispatcher, unavailable

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "docs" / "screenshots"


def server(settings: Settings) -> LocalServer:
    """The app under uvicorn on a free loopback port. Jobs are recorded, not run (the tests release
    them with a stub sandbox), so no embedded worker takes them."""
    return LocalServer(settings, dispatcher=RecordingDispatcher(settings))


def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        unavailable("Playwright", e)
    if shutil.which(CHROMIUM) is None:
        unavailable("Chromium", f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def screenshot(page: Any, name: str, tmp: Path) -> Path:
    """A picture of the page for the README: into docs/screenshots with EVALGATE_UPDATE_SCREENSHOTS=1,
    else beside the test's other files."""
    folder = SCREENSHOTS if os.environ.get("EVALGATE_UPDATE_SCREENSHOTS") == "1" else tmp
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
