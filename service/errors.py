"""Domain errors. Every stable error code is a class: its HTTP status, its `code` and, in its
docstring, what it means. Services raise them; one exception handler (main.py) renders them as
{"error": code, "detail": ..., "alternatives": [...]}, with Retry-After when the class sets it.

The status families below carry no code of their own; each domain's `errors.py` names its cases.
`catalogue()` lists them all, and `docs/errors.md` is generated from it (`evalgate errors`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar


class EvalgateError(Exception):
    status_code: ClassVar[int] = 400
    code: ClassVar[str | None] = None  # set by every concrete case
    rule: ClassVar[str | None] = None  # the policy rule a refusal comes from (service.policies.catalogue)

    def __init__(self, detail: str, *, alternatives: list[str] | None = None, retry_after_s: int | None = None):
        if self.code is None:
            raise TypeError(f"{type(self).__name__} is a family of errors; raise one of its cases")
        super().__init__(detail)
        self.detail = detail
        self.alternatives = alternatives or []
        self.retry_after_s = retry_after_s  # sent as Retry-After when set

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__ and not (cls.__doc__ and cls.__doc__.strip()):
            raise TypeError(f"error {cls.__name__} needs a docstring saying what its code means")

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(max(1, int(self.retry_after_s)))} if self.retry_after_s is not None else None

    def to_dict(self) -> dict[str, object]:
        found: dict[str, object] = {"error": self.code, "detail": self.detail, "alternatives": self.alternatives}
        if self.rule is not None:
            found["rule"] = self.rule
        return found


F = TypeVar("F", bound=Callable[..., Any])
_DECLARED: dict[Callable[..., Any], tuple[type[EvalgateError], ...]] = {}


def raises(*errors: type[EvalgateError]) -> Callable[[F], F]:
    """Declare the error cases an endpoint or a dependency raises itself (beyond those every route of
    its kind can give, which service.openapi derives). Put it under the route's decorator."""
    for error in errors:
        if error.__dict__.get("code") is None:
            raise TypeError(f"{error.__name__} is a family of errors; declare its cases")

    def declare(fn: F) -> F:
        _DECLARED[fn] = _DECLARED.get(fn, ()) + errors
        return fn

    return declare


def declared(fn: Callable[..., Any]) -> tuple[type[EvalgateError], ...]:
    """The error cases `fn` was declared with (`raises`)."""
    return _DECLARED.get(fn, ())


# -- families, by status --------------------------------------------------------------------------------


class BadRequest(EvalgateError):
    status_code = 400


class Unauthorized(EvalgateError):
    status_code = 401


class Forbidden(EvalgateError):
    status_code = 403


class NotFound(EvalgateError):
    status_code = 404


class MethodNotAllowed(EvalgateError):
    status_code = 405


class Conflict(EvalgateError):
    status_code = 409


class PreconditionFailed(EvalgateError):
    status_code = 412


class PayloadTooLarge(EvalgateError):
    status_code = 413


class Unprocessable(EvalgateError):
    status_code = 422


class PreconditionRequired(EvalgateError):
    status_code = 428


class TooManyRequests(EvalgateError):
    status_code = 429


class ServiceUnavailable(EvalgateError):
    status_code = 503


class InsufficientStorage(EvalgateError):
    status_code = 507


# -- cases that belong to no one domain -------------------------------------------------------------------


class UnknownRoute(NotFound):
    """No endpoint of the API has this address (the OpenAPI document at `/docs` lists them all)."""

    code = "not_found"


class UnsupportedMethod(MethodNotAllowed):
    """The address is an endpoint, but not for this HTTP method; `alternatives` (and the `Allow`
    header) name the methods it takes."""

    code = "method_not_allowed"


class InvalidRequest(Unprocessable):
    """The request does not match the API's schema (a missing or unknown field, a wrong type, a
    value out of range); `detail` lists each problem with its location."""

    code = "invalid_request"


class BodyTooLarge(PayloadTooLarge):
    """The request body is larger than the route takes: `EVALGATE_JSON_MAX_BYTES` for a JSON body,
    nothing at all for a route without one (uploads answer with their own codes). Refused before the
    body is read; the connection is closed."""

    code = "body_too_large"


class DatabaseUnavailable(ServiceUnavailable):
    """The service's database does not answer (it restarts, or the network to it is down). Nothing
    was changed; retry after `Retry-After` seconds. The service reconnects by itself."""

    code = "database_unavailable"


class StorageFull(InsufficientStorage):
    """The server's disk is full. Nothing was stored (no partial file, no half-made record); retry
    after `Retry-After` seconds, once an operator has made room."""

    code = "storage_full"


class MalformedBody(BadRequest):
    """The request body is not what its `Content-Type` says (JSON that is not UTF-8, multipart data
    that cannot be parsed); nothing of the request ran."""

    code = "malformed_body"


class InternalError(EvalgateError):
    """An unexpected error on the server. Nothing was changed; `detail` carries a request id that
    operators can find in the logs."""

    status_code = 500
    code = "internal_error"


# Every module that defines error cases; the catalogue imports them all.
ERROR_MODULES = (
    "service.errors",
    "service.auth.errors",
    "service.registry.errors",
    "service.jobs.errors",
    "service.quotas.errors",
    "service.policies.errors",
    "service.transparency.errors",
    "service.approvals.errors",
    "service.sanctions.errors",
    "service.reproductions.errors",
    "service.twins.errors",
)


def catalogue() -> list[type[EvalgateError]]:
    """Every error case, sorted by status then code."""
    import importlib

    for module in ERROR_MODULES:
        importlib.import_module(module)
    found: dict[str, type[EvalgateError]] = {}
    stack: list[type[EvalgateError]] = [EvalgateError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        code = cls.__dict__.get("code")
        if code is not None and cls.__module__ in ERROR_MODULES:
            if code in found and found[code] is not cls:
                raise RuntimeError(f"error code {code} is defined twice: {found[code].__name__}, {cls.__name__}")
            found[code] = cls
    return sorted(found.values(), key=lambda c: (c.status_code, str(c.code)))


def catalogue_markdown() -> str:
    """The table in docs/errors.md."""
    lines = [
        "# Error codes",
        "",
        "Generated by `evalgate errors` from the error classes in `service/`; a test keeps this file",
        'in step with the code. Every error answer is `{"error": code, "detail": ..., "alternatives": [...]}`;',
        "429, 503 and 507 answers carry `Retry-After`.",
        "",
        "| status | code | meaning |",
        "|---|---|---|",
    ]
    for cls in catalogue():
        meaning = " ".join(inspect.cleandoc(cls.__doc__ or "").split())
        lines.append(f"| {cls.status_code} | `{cls.code}` | {meaning} |")
    return "\n".join(lines) + "\n"
