"""API ingress: what every request passes before the app reads a byte of its body.

FastAPI reads and parses a body before it runs an endpoint's dependencies, and authentication is a
dependency, so without this a caller with no key at all could make the server spool a 512 MiB upload
or hold a 256 MiB JSON document before being told 401. Ingress decides from the request line and the
headers alone, in this order:

1. route: the route the router will pick. With none (404) or none for the method (405) the router
   answers without reading the body, and the request goes on untouched;
2. body limit: a declared `Content-Length` over the route's limit is refused (413) unread. A route
   without a body takes 0 bytes, a JSON route `json_max_bytes`, an upload the setting its decorator
   names (`upload_limit`, in `openapi_extra`) plus multipart overhead, a form of the results site
   what its `form_limit` says (4 KiB);
3. authentication, for every route whose dependencies ask who calls (`current_caller`); the others
   are public (health, the attestation key, the OpenAPI document and its pages) or pages of the
   results site, which check their session cookie before they read a form (service/site). Failures are
   rate-limited per client address (`AuthFailures`: 429 with Retry-After, decided before any database
   lookup); a missing or bad key gets the 401 the dependency gave, audited as `access.denied` as it
   was. The caller found is put in the request's state, where `current_caller` takes it;
4. body: only now may the app read it, through a `receive` that cuts the stream at the limit
   (a chunked body declares no length): the app sees a disconnect, nothing of the request runs, and
   the client gets the route's 413 in place of whatever the app answered to the disconnect.

A refusal sent before a declared body was read closes the connection (`Connection: close`), so the
server does not go on reading a body nobody will use.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import RouteContext, iter_route_contexts
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import errors as auth_errors
from service.auth import service as auth_service
from service.auth.dependencies import CALLER_STATE, ROLES_ADMITTED, bearer_token, current_caller, wrong_role
from service.auth.roles import Role
from service.auth.service import Caller
from service.config import Settings
from service.errors import BodyTooLarge, EvalgateError, PayloadTooLarge, Unauthorized, catalogue

log = logging.getLogger(__name__)

UPLOAD = "x-evalgate-upload"
MULTIPART_OVERHEAD = 64 << 10  # form fields, part headers and boundaries around an upload's one file
UploadLimit = Literal["bundle_max_bytes", "model_max_bytes", "dataset_max_bytes"]
FORM = "x-evalgate-form"
FORM_MAX_BYTES = 4096  # the results site's forms: a key or nothing, and a CSRF token
# Where ingress leaves its limiter of failed authentications: request.state.auth_failures (the site's
# sign-in, which takes a key from a form, counts its failures in the same buckets).
FAILURES_STATE = "auth_failures"


def upload_limit(setting: UploadLimit, too_large: type[PayloadTooLarge]) -> dict[str, Any]:
    """The `openapi_extra` of a multipart route: the setting that bounds its file and the error that
    refuses a larger one. Ingress will not start with a multipart route that lacks it."""
    return {UPLOAD: {"limit": setting, "too_large": too_large.code}}


def form_limit(max_bytes: int = FORM_MAX_BYTES) -> dict[str, Any]:
    """The `openapi_extra` of a route that reads a small urlencoded form itself, declaring no body
    parameter (the results site's forms): its limit, checked on the headers like any other."""
    return {FORM: {"limit": max_bytes}}


class Body(StrEnum):
    NONE = "none"
    JSON = "json"
    UPLOAD = "upload"
    FORM = "form"


@dataclass(frozen=True)
class RoutePolicy:
    """What ingress checks for one route, derived from the route itself."""

    route: RouteContext
    methods: frozenset[str]
    path: str
    body: Body
    authenticated: bool
    limit_setting: str | None = None  # uploads: the Settings field bounding the file
    too_large: type[PayloadTooLarge] = BodyTooLarge
    form_bytes: int = 0  # forms: their limit (form_limit)
    roles: tuple[Role, ...] | None = None  # the roles the route admits (require_role), None: any caller

    def limit(self, settings: Settings) -> int:
        """Read on every request, so a changed setting applies at once."""
        if self.body is Body.UPLOAD:
            assert self.limit_setting is not None
            return int(getattr(settings, self.limit_setting)) + MULTIPART_OVERHEAD
        if self.body is Body.FORM:
            return self.form_bytes
        return settings.json_max_bytes if self.body is Body.JSON else 0

    def refusal(self, settings: Settings) -> PayloadTooLarge:
        if self.body is Body.UPLOAD:
            return self.too_large(f"the file is larger than {getattr(settings, str(self.limit_setting))} bytes")
        if self.body is Body.FORM:
            return self.too_large(f"the form is larger than {self.form_bytes} bytes")
        if self.body is Body.JSON:
            return self.too_large(f"the JSON body is larger than {settings.json_max_bytes} bytes")
        return self.too_large("this route takes no request body")


def _asks_who_calls(dependant: Dependant) -> bool:
    return any(d.call is current_caller or _asks_who_calls(d) for d in dependant.dependencies)


def _roles_admitted(dependant: Dependant) -> tuple[Role, ...] | None:
    """The roles every require_role of the route admits (None when it has none)."""
    found: tuple[Role, ...] | None = None
    for d in dependant.dependencies:
        for roles in (ROLES_ADMITTED.get(d.call) if d.call is not None else None, _roles_admitted(d)):
            if roles is not None:
                found = roles if found is None else tuple(r for r in found if r in roles)
    return found


def route_policies(routes: Sequence[BaseRoute]) -> list[RoutePolicy]:
    """One policy per route the app serves, in the router's order. Raises on a multipart route
    without `upload_limit`, so a new upload cannot go unbounded."""
    too_large: dict[str | None, type[PayloadTooLarge]] = {
        c.code: c for c in catalogue() if issubclass(c, PayloadTooLarge)
    }
    policies = []
    for ctx in iter_route_contexts(routes):
        methods, path = frozenset(ctx.methods or ()), ctx.path or ""
        dependant: Dependant | None = getattr(ctx, "dependant", None)
        authenticated = dependant is not None and _asks_who_calls(dependant)
        roles = _roles_admitted(dependant) if dependant is not None else None
        body_field = getattr(ctx, "body_field", None)
        form = (getattr(ctx, "openapi_extra", None) or {}).get(FORM)
        if body_field is None and form is not None:
            policies.append(
                RoutePolicy(ctx, methods, path, Body.FORM, authenticated, form_bytes=int(form["limit"]), roles=roles)
            )
        elif body_field is None:
            policies.append(RoutePolicy(ctx, methods, path, Body.NONE, authenticated, roles=roles))
        elif isinstance(body_field.field_info, params.Form):  # File is a Form too: multipart
            marker = (getattr(ctx, "openapi_extra", None) or {}).get(UPLOAD) or {}
            if marker.get("limit") not in Settings.model_fields or marker.get("too_large") not in too_large:
                raise RuntimeError(f"{sorted(methods)} {path} takes a multipart body but has no upload_limit()")
            refusal = too_large[marker["too_large"]]
            policies.append(
                RoutePolicy(ctx, methods, path, Body.UPLOAD, authenticated, marker["limit"], refusal, roles=roles)
            )
        else:
            policies.append(RoutePolicy(ctx, methods, path, Body.JSON, authenticated, roles=roles))
    return policies


@dataclass
class _Bucket:
    tokens: float
    at: float
    refusal_audited_at: float | None = None


class AuthFailures:
    """Failed authentications per client address: a token bucket of `per_minute` failures, refilled
    continuously. Only failures take tokens: an address that ran out is refused (429) without a
    database lookup, except for a key that authenticated on this process before (kept as a digest),
    which is still checked, so a partner behind the same address as an attacker keeps working; a key
    first used from an address while it is refused waits like the rest.

    Per API process: each process (each uvicorn worker, each replica) keeps its own buckets, so k
    processes let an address fail up to k times as often; a restart forgets them. Memory is bounded:
    at most `max_addresses` buckets and `max_vouched` digests, the least recently used evicted first.
    Touched only on the event loop, so it needs no lock."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, max_addresses: int, max_vouched: int = 4096):
        self.capacity, self.rate = float(per_minute), per_minute / self.WINDOW_S
        self.max_addresses, self.max_vouched = max_addresses, max_vouched
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._vouched: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, address: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(address)
        if bucket is not None:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def wait_s(self, address: str, now: float) -> float | None:
        """None while the address may fail again; else how long until it may."""
        bucket = self._refilled(address, now)
        if bucket is None or bucket.tokens >= 1:
            return None
        return (1 - bucket.tokens) / self.rate

    def failed(self, address: str, now: float) -> None:
        bucket = self._refilled(address, now) or _Bucket(self.capacity, now)
        bucket.tokens = max(0.0, bucket.tokens - 1)
        self._buckets[address] = bucket
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)

    def first_refusal_of_window(self, address: str, now: float) -> bool:
        """Whether a 429 to this address is the first in a window (only that one is audited)."""
        bucket = self._buckets.get(address)
        if bucket is None or (
            bucket.refusal_audited_at is not None and now - bucket.refusal_audited_at < self.WINDOW_S
        ):
            return False
        bucket.refusal_audited_at = now
        return True

    @staticmethod
    def _digest(token: str | None) -> str:
        return hashlib.sha256((token or "").encode()).hexdigest()

    def vouch(self, token: str | None, ok: bool) -> None:
        digest = self._digest(token)
        if not ok:
            self._vouched.pop(digest, None)
            return
        self._vouched[digest] = None
        self._vouched.move_to_end(digest)
        while len(self._vouched) > self.max_vouched:
            self._vouched.popitem(last=False)

    def vouched(self, token: str | None) -> bool:
        return bool(token) and self._digest(token) in self._vouched


def _check_key(sessions: sessionmaker[Session], token: str | None, route: str, audit: bool) -> Caller:
    """The database side of authentication (in a worker thread): the key, and the denial's audit in
    its own transaction."""
    with sessions() as session:
        try:
            return auth_service.authenticate(session, token)
        except Unauthorized as e:
            if audit:
                auth_service.record_denial(session, actor="anonymous", route=route, reason=e.code)
                session.commit()
            raise


def _audit_refusal(sessions: sessionmaker[Session], route: str, reason: str | None, client: str) -> None:
    with sessions() as session:
        auth_service.record_denial(session, actor="anonymous", route=route, reason=reason, client=client)
        session.commit()


def _audit_role_refusal(sessions: sessionmaker[Session], caller: Caller, route: str, error: EvalgateError) -> None:
    with sessions() as session:
        auth_service.record_denial(session, actor=caller.actor, route=route, reason=error.code)
        session.commit()


def _declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


class _CappedBody:
    """The app's view of the request body: at most `limit` bytes, then a disconnect."""

    def __init__(self, receive: Receive, limit: int):
        self._receive, self.limit, self.read, self.cut = receive, limit, 0, False

    async def receive(self) -> Message:
        if self.cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if self.read > self.limit:
                self.cut = True
                return {"type": "http.disconnect"}
        return message


class Ingress:
    """Pure ASGI, inside `RequestIds` (so refusals carry the request id). See the module's docstring."""

    def __init__(self, app: ASGIApp, *, router: Router, settings: Settings):
        # Built with the middleware stack, when the app first runs (its lifespan): every route is in.
        self.app, self.settings = app, settings
        self.policies = route_policies(router.routes)
        self.failures = AuthFailures(settings.auth_failures_per_minute, settings.auth_failure_addresses)

    def policy_for(self, scope: Scope) -> RoutePolicy | None:
        """The route the router will run (the first full match), or None when it will answer 404/405."""
        for policy in self.policies:
            if policy.route.matches(scope)[0] is Match.FULL:
                return policy
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.policy_for(scope) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[FAILURES_STATE] = self.failures
        headers = Headers(scope=scope)
        declared = _declared_length(headers)
        unread = bool(declared) or "transfer-encoding" in headers  # a body the client may be sending
        limit = policy.limit(self.settings)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, policy.refusal(self.settings), close=True)
            return
        if policy.authenticated:
            try:
                caller = await self._authenticate(scope, headers, policy)
            except EvalgateError as e:
                await _refuse(scope, receive, send, e, close=unread)
                return
            refused = wrong_role(caller, policy.roles) if policy.roles is not None else None
            if refused is not None:  # before a byte of the body is read, as the route would refuse it after
                sessions: sessionmaker[Session] = scope["app"].state.sessionmaker
                await run_in_threadpool(
                    _audit_role_refusal, sessions, caller, f"{scope['method']} {policy.path}", refused
                )
                await _refuse(scope, receive, send, refused, close=unread)
                return
            scope.setdefault("state", {})[CALLER_STATE] = caller
        await self._run(scope, receive, send, policy, limit)

    async def _authenticate(self, scope: Scope, headers: Headers, policy: RoutePolicy) -> Caller:
        token = bearer_token(headers.get("authorization", ""))
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        # The route's template, never the path as sent: a denial is audited before any key is
        # checked, and a path of 64 KiB would otherwise cost the audit log twice that per request.
        route = f"{scope['method']} {policy.path}"
        sessions: sessionmaker[Session] = scope["app"].state.sessionmaker
        wait = self.failures.wait_s(address, time.monotonic())
        if wait is not None and not self.failures.vouched(token):
            raise await self._too_many(sessions, route, address, wait)
        try:
            caller = await run_in_threadpool(_check_key, sessions, token, route, wait is None)
        except Unauthorized:
            self.failures.failed(address, time.monotonic())
            self.failures.vouch(token, ok=False)
            if wait is not None:
                raise await self._too_many(sessions, route, address, wait) from None
            raise
        self.failures.vouch(token, ok=True)
        return caller

    async def _too_many(self, sessions: sessionmaker[Session], route: str, address: str, wait: float) -> EvalgateError:
        error = auth_errors.TooManyAuthFailures(
            f"too many failed authentications from {address}",
            alternatives=["retry after Retry-After seconds", "a key that authenticated from here before still works"],
            retry_after_s=math.ceil(wait),
        )
        if self.failures.first_refusal_of_window(address, time.monotonic()):
            await run_in_threadpool(_audit_refusal, sessions, route, error.code, address)
        return error

    async def _run(self, scope: Scope, receive: Receive, send: Send, policy: RoutePolicy, limit: int) -> None:
        body = _CappedBody(receive, limit)
        answered = False

        async def send_unless_cut(message: Message) -> None:
            nonlocal answered
            if body.cut and not answered:
                return  # the app's answer to a body it never got whole: the 413 below goes instead
            answered = True
            await send(message)

        try:
            await self.app(scope, body.receive, send_unless_cut)
        except Exception:
            if not body.cut or answered:
                raise
            log.info(
                "%s %s: body cut at %d bytes; the app's error gives way to 413", scope["method"], policy.path, limit
            )
        if body.cut and not answered:
            await _refuse(scope, receive, send, policy.refusal(self.settings), close=True)


async def _refuse(scope: Scope, receive: Receive, send: Send, error: EvalgateError, *, close: bool) -> None:
    headers = dict(error.headers() or {})
    if close:
        headers["Connection"] = "close"
    response = JSONResponse(status_code=error.status_code, content=error.to_dict(), headers=headers)
    await response(scope, receive, send)
