"""The OpenAPI document's errors: each derived from what the route is (public or not, its body, its
parameters, its role check) and what it declares, always in the one error shape."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import Settings
from service.errors import NotFound, catalogue, raises


@pytest.fixture
def document(settings: Settings) -> dict[str, Any]:
    from service.main import create_app

    return create_app(settings).openapi()


def errors_of(document: dict[str, Any], method: str, path: str) -> dict[str, list[str]]:
    """status -> the codes the operation declares for it."""
    found = {}
    for status, response in document["paths"][path][method]["responses"].items():
        if status.startswith(("4", "5")):
            media = response["content"]["application/json"]
            assert "ErrorRead" in str(media["schema"]), (method, path, status)
            found[status] = sorted(media["examples"])
            assert media["schema"]["allOf"][1]["properties"]["error"]["enum"] == sorted(media["examples"])
    return found


def test_every_error_answer_is_in_the_error_shape_and_fastapis_is_gone(document):
    assert "HTTPValidationError" not in str(document)
    for path, operations in document["paths"].items():
        for method in operations:
            declared = errors_of(document, method, path)
            assert declared["500"] == ["internal_error"] and "413" in declared, (method, path)


def test_a_public_route_declares_no_authentication_errors(document):
    assert errors_of(document, "get", "/healthz") == {"413": ["body_too_large"], "500": ["internal_error"]}


def test_authentication_role_and_route_errors_are_declared_where_they_can_happen(document):
    listing = errors_of(document, "get", "/v1/models")  # any role, no parameters
    assert listing["401"] == ["invalid_key", "key_expired", "key_revoked", "missing_key"]
    assert listing["429"] == ["too_many_auth_failures"]
    for outage in (503, 507):  # the database, the rate limiter, the disk: whichever cases the catalogue has
        assert listing.get(str(outage), []) == sorted(str(c.code) for c in catalogue() if c.status_code == outage)
    assert "403" not in listing and "422" not in listing
    upload = errors_of(document, "post", "/v1/models")  # operators only, a multipart body
    assert upload["403"] == ["wrong_role"] and upload["413"] == ["model_too_large"]
    assert {"invalid_request", "invalid_model"} <= set(upload["422"]) and upload["409"] == ["version_taken"]
    suite = errors_of(document, "post", "/v1/suites")
    assert {"bundle_too_large", "bundle_too_compressed"} <= set(suite["413"]) and "bundle_link" in suite["422"]
    job = errors_of(document, "get", "/v1/jobs/{job_id}")  # a str path parameter cannot fail validation
    assert job["404"] == ["job_not_found"] and "422" not in job


def test_only_cases_can_be_declared():
    with pytest.raises(TypeError):
        raises(NotFound)
