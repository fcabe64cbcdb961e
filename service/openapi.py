"""The OpenAPI document declares every error a route can answer: each status, in the one error shape
(`ErrorRead`), with the codes it can carry there and what they mean.

A route's errors are derived, never listed per route by hand:

1. every route: 500 `internal_error` (RequestIds) and 413 (ingress: a body over the route's limit,
   or any body on a route that takes none; an upload answers with its own code);
2. a route with a parameter or a body that can fail validation: 422 `invalid_request`;
3. an authenticated route (as ingress decides): 401 (every `Unauthorized` case: ingress passes on
   whatever the key check raised), 429 `too_many_auth_failures`, and every outage case (503: the
   database or the rate limiter is away; 507: the disk is full), whichever the catalogue has;
4. what its endpoint and each dependency it runs declare with `@raises(...)`: a role check narrower
   than every role declares 403 `wrong_role`, an upload its refusals, and so on;
5. a route with a body: 400 `malformed_body` (main.py: a body its parser cannot read).

Each status's schema restricts `error` to the codes declared for it, so the schema fuzzer
(tests/test_schema_fuzz.py) fails on any code a route gives and does not declare.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from service.auth.errors import TooManyAuthFailures
from service.errors import (
    EvalgateError,
    InternalError,
    InvalidRequest,
    MalformedBody,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    catalogue,
    declared,
)
from service.ingress import route_policies

# What any request that reaches the database can meet when something the service depends on is away
# (service.outages): the database or the rate limiter (503), disk space (507).
OUTAGES = (ServiceUnavailable.status_code, 507)
RETRY_AFTER = (TooManyRequests.status_code, *OUTAGES)  # statuses whose answers carry Retry-After
SCHEMAS = "#/components/schemas/"
# FastAPI's own 422 shape, which this app never answers with (main.py renders validation errors as ErrorRead).
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


class ValidationProblem(BaseModel):
    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str


class ErrorRead(BaseModel):
    """Every error answer of the API."""

    error: str = Field(description="the stable machine-readable code (docs/errors.md)")
    detail: str | list[ValidationProblem] = Field(
        description="what was wrong; for `invalid_request`, each problem with its location"
    )
    alternatives: list[str] = Field(description="what the caller can do instead")
    rule: str | None = Field(
        default=None, description="the policy rule the refusal comes from (`GET /v1/policies`), where it comes from one"
    )


def declare_errors(app: FastAPI) -> None:
    """Make `app.openapi()` declare every route's errors. Done when the document is first built, so
    routes added after this call are covered too."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_errors(build(), app)
        return app.openapi_schema  # type: ignore[return-value]  # set by build()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def route_errors(
    dependant: Dependant, *, authenticated: bool, too_large: type[EvalgateError]
) -> set[type[EvalgateError]]:
    """Every error case one route can answer with (see the module's docstring)."""
    found: set[type[EvalgateError]] = {InternalError, too_large}
    if _validates(dependant):
        found.add(InvalidRequest)
    if _dependants_body(dependant):
        found.add(MalformedBody)
    if authenticated:
        found |= {c for c in catalogue() if issubclass(c, Unauthorized) or c.status_code in OUTAGES}
        found.add(TooManyAuthFailures)
    for d in _dependants(dependant):
        if d.call is not None:
            found.update(declared(d.call))
    return found


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    """The route's own and every dependency's, all the way down."""
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _dependants_body(dependant: Dependant) -> bool:
    return any(d.body_params for d in _dependants(dependant))


def _validates(dependant: Dependant) -> bool:
    """Whether a request can fail the route's validation (a path parameter of type str cannot)."""
    for d in _dependants(dependant):
        if d.query_params or d.header_params or d.cookie_params or d.body_params:
            return True
        if any(p.field_info.annotation is not str for p in d.path_params):
            return True
    return False


def _add_errors(document: dict[str, Any], app: FastAPI) -> None:
    for policy in route_policies(app.router.routes):
        dependant: Dependant | None = getattr(policy.route, "dependant", None)
        if dependant is None or not getattr(policy.route, "include_in_schema", False):
            continue  # the document's own routes (/openapi.json, /docs)
        errors = route_errors(dependant, authenticated=policy.authenticated, too_large=policy.too_large)
        path = str(policy.route.path_format)
        for method in policy.methods:
            operation = document["paths"][path][method.lower()]
            _declare(operation, errors)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    _, top = models_json_schema([(ErrorRead, "serialization")], ref_template=SCHEMAS + "{model}")
    schemas.update(top["$defs"])


def _declare(operation: dict[str, Any], errors: set[type[EvalgateError]]) -> None:
    """One response per status the operation's errors have, in place of FastAPI's own 422."""
    responses = {status: r for status, r in operation["responses"].items() if not _fastapi_validation_error(r)}
    by_status: dict[int, list[type[EvalgateError]]] = {}
    for error in sorted(errors, key=lambda e: str(e.code)):
        by_status.setdefault(error.status_code, []).append(error)
    for status in sorted(by_status):
        responses[str(status)] = _response(status, by_status[status])
    operation["responses"] = responses


def _fastapi_validation_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref") in {SCHEMAS + name for name in FASTAPI_VALIDATION_SCHEMAS}


def _meaning(error: type[EvalgateError]) -> str:
    return " ".join(inspect.cleandoc(error.__doc__ or "").split())


def _response(status: int, errors: list[type[EvalgateError]]) -> dict[str, Any]:
    """One status's response object: the codes it can carry, with their meanings and examples."""
    schema = {
        "allOf": [{"$ref": SCHEMAS + ErrorRead.__name__}, {"properties": {"error": {"enum": [e.code for e in errors]}}}]
    }
    examples = {
        str(e.code): {
            "summary": _meaning(e).split(". ")[0],
            "value": {"error": e.code, "detail": _meaning(e), "alternatives": []},
        }
        for e in errors
    }
    response: dict[str, Any] = {
        "description": "\n".join(f"- `{e.code}`: {_meaning(e)}" for e in errors),
        "content": {"application/json": {"schema": schema, "examples": examples}},
    }
    if status in RETRY_AFTER:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
        }
    return response
