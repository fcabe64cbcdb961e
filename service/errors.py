"""Domain errors. Each carries its HTTP status and a stable machine-readable code.

Services raise these; one exception handler in main.py renders them as
{"error": code, "detail": ..., "alternatives": [...]}.
"""

from __future__ import annotations


class EvalgateError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        alternatives: list[str] | None = None,
        retry_after_s: int | None = None,
    ):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.alternatives = alternatives or []
        self.retry_after_s = retry_after_s  # sent as Retry-After when set

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(max(1, int(self.retry_after_s)))} if self.retry_after_s is not None else None

    def to_dict(self) -> dict:
        return {"error": self.code, "detail": self.detail, "alternatives": self.alternatives}


class InvalidInput(EvalgateError):
    status_code = 422
    code = "invalid_input"


class Unauthorized(EvalgateError):
    status_code = 401
    code = "unauthorized"


class Forbidden(EvalgateError):
    status_code = 403
    code = "forbidden"


class NotFound(EvalgateError):
    status_code = 404
    code = "not_found"


class Conflict(EvalgateError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(EvalgateError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(EvalgateError):
    status_code = 429
    code = "too_many_requests"
