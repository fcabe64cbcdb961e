"""Helpers that act as a browser would on the site through an HTTP client: read a form's token,
sign in, pick a page's parts."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from tests.site.seed import DATASET, SUITE

BOARD = {"suite": SUITE, "dataset": DATASET}


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def sign_in(client: TestClient, headers: dict[str, str]) -> httpx.Response:
    """Sign in with the key of `headers` (a harness key); the client keeps the cookie."""
    client.cookies.clear()
    page = client.get("/site/sign-in")
    assert page.status_code == 200, page.text
    r = client.post(
        "/site/sign-in",
        data={"csrf": csrf_of(page.text), "key": key_of(headers), "next": "/site/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/site/", r.text
    return r


def job_links(html: str) -> list[str]:
    return re.findall(r'href="/site/jobs/([0-9a-f-]{36})"', html)
