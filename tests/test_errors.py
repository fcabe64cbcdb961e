"""Errors: every stable code is a class with a meaning, the table in docs/ is in step with the code,
and an unexpected exception answers in the same shape with a request id, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from service.errors import EvalgateError, NotFound, catalogue, catalogue_markdown

REPO = Path(__file__).resolve().parents[1]


def test_docs_table_is_generated_from_the_code():
    assert (REPO / "docs" / "errors.md").read_text() == catalogue_markdown(), "run `evalgate errors > docs/errors.md`"


def test_every_code_is_one_class_with_a_meaning():
    cases = catalogue()
    codes = [c.code for c in cases]
    assert len(codes) == len(set(codes)) and len(codes) >= 50
    assert all(
        c.__doc__ and c.status_code in (400, 401, 403, 404, 405, 409, 412, 413, 422, 428, 429, 500, 503, 507)
        for c in cases
    )
    with pytest.raises(TypeError):
        NotFound("a family of errors has no code of its own")
    with pytest.raises(TypeError):

        class Undocumented(NotFound):
            code = "undocumented"


def test_no_code_is_raised_that_the_catalogue_does_not_know():
    """Every `code = "..."` in the service belongs to a catalogued class (no ad-hoc codes)."""
    known = {c.code for c in catalogue()}
    written = set()
    for path in (REPO / "service").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith('code = "'):
                written.add(stripped.split('"')[1])
    assert written == known


def test_an_unexpected_exception_answers_500_in_the_error_shape_with_a_request_id(api):
    router = APIRouter()

    @router.get("/boom")
    def boom() -> dict:
        raise RuntimeError("secret internals /etc/evalgate Traceback")

    api.client.app.include_router(router)
    r = api.client.get("/boom", headers={"X-Request-ID": "req-1234abcd"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal_error" and body["alternatives"] == []
    assert "req-1234abcd" in body["detail"] and r.headers["X-Request-ID"] == "req-1234abcd"
    assert "secret" not in r.text and "Traceback" not in r.text
    # every answer carries an id, made up when the client sent none (or a strange one)
    ok = api.client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert ok.status_code == 200 and 8 <= len(ok.headers["X-Request-ID"]) <= 64


def test_a_domain_error_keeps_its_status_code_and_retry_after():
    class Busy(EvalgateError):
        """For this test."""

        status_code = 429
        code = "test_busy_only_here"

    e = Busy("wait", retry_after_s=0.2, alternatives=["later"])
    assert e.to_dict() == {"error": "test_busy_only_here", "detail": "wait", "alternatives": ["later"]}
    assert e.headers() == {"Retry-After": "1"}


def test_validation_errors_use_the_same_shape(api):
    r = api.client.post("/v1/jobs", headers=api.partner, json={"suite": 1})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert isinstance(r.json()["detail"], list) and r.json()["alternatives"] == []


def test_client_sees_errors_as_json(settings):
    from service.main import create_app

    with TestClient(create_app(settings)) as client:
        r = client.get("/v1/jobs")
        assert r.status_code == 401 and r.json()["error"] == "missing_key"


def test_the_routers_own_404_and_405_answer_in_the_error_shape(api):
    """An address no route has, or a method its route does not take, answers like every other error
    (FastAPI's `{"detail": "Not Found"}` would carry no stable code)."""
    for headers in (api.partner, {}):  # with a key or without: no route, nothing to authenticate
        r = api.client.get("/v1/nope", headers=headers)
        assert r.status_code == 404 and r.headers["content-type"] == "application/json", r.text
        assert r.json()["error"] == "not_found" and r.json()["alternatives"] == ["GET /docs lists every endpoint"]
        assert api.client.post("/v2/jobs", headers=headers, json={}).json()["error"] == "not_found"
    r = api.client.delete("/v1/jobs", headers=api.partner)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed", r.text
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert {"GET /v1/jobs", "POST /v1/jobs"} <= set(r.json()["alternatives"]) and "DELETE" in r.json()["detail"]
    r = api.client.put("/healthz")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_the_sites_unknown_addresses_still_answer_its_html_page(api):
    from tests.site.pages import sign_in

    sign_in(api.client, api.researcher)
    r = api.client.get("/site/no/such/page")
    assert r.status_code == 404 and "Page not found" in r.text and "<!doctype html>" in r.text
    assert r.headers["content-type"].startswith("text/html")
