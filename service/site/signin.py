"""Signing in (an API key pasted once, in a form) and out. The sign-in form's failures spend the
same per-address bucket as the API's failed keys (ingress hands it over in the request's state)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from service.auth import service as auth_service
from service.config import Settings
from service.db import session_scope, utcnow
from service.deps import SettingsDep
from service.errors import Unauthorized
from service.ingress import FAILURES_STATE, AuthFailures, form_limit
from service.site import sessions
from service.site.rendering import HEADERS, SignedDep, refused, render, secure_cookie
from service.site.sessions import COOKIE, SIGN_IN_COOKIE, Signed

router = APIRouter(include_in_schema=False)  # under /site: endpoints.py includes it


def _safe_next(value: object) -> str:
    """Where to go after signing in: a page of this site, never another origin."""
    if isinstance(value, str) and value.startswith("/site/") and "//" not in value and "\\" not in value:
        return value[:512]
    return "/site/"


@router.get("/sign-in", name="sign_in_page")
def sign_in_page(request: Request, signed: SignedDep, settings: SettingsDep, next: str = "/site/") -> Response:
    if signed is not None:
        return RedirectResponse(_safe_next(next), status_code=303, headers=HEADERS)
    return _sign_in_form(request, settings, _safe_next(next))


def _sign_in_form(
    request: Request, settings: Settings, next_page: str, status: int = 200, problem: str = ""
) -> Response:
    token = sessions.new_token()
    response = render(request, "sign_in.html", None, status, csrf=token, next_page=next_page, problem=problem)
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        path="/site",
        secure=secure_cookie(request, settings),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/sign-in", openapi_extra=form_limit())
async def sign_in(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    form = await request.form()
    next_page = _safe_next(form.get("next"))
    if not sessions.tokens_match(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")):
        return refused(request, None)
    failures: AuthFailures | None = getattr(request.state, FAILURES_STATE, None)
    address = request.client.host if request.client else "unknown"
    key = form.get("key")
    key_text = key.strip() if isinstance(key, str) else None
    if failures is not None:
        wait = failures.wait_s(address, time.monotonic())
        if wait is not None and not failures.vouched(key_text):
            response = _sign_in_form(
                request,
                settings,
                next_page,
                429,
                f"Too many keys were refused from your address. Try again in {int(wait) + 1} seconds.",
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
    try:
        token, signed = await run_in_threadpool(_start_session, request, key_text)
    except Unauthorized as e:
        if failures is not None:
            failures.failed(address, time.monotonic())
            failures.vouch(key_text, ok=False)
        reasons = {
            "missing_key": "Paste your API key to sign in.",
            "invalid_key": "That key was not recognised. Check that you pasted all of it (it starts with eg_).",
            "key_revoked": "That key has been revoked. Ask an operator for a new one.",
            "key_expired": "That key has expired. Ask an operator for a new one.",
        }
        return _sign_in_form(request, settings, next_page, 401, reasons.get(e.code or "", "That key was not accepted."))
    if failures is not None:
        failures.vouch(key_text, ok=True)
    response = RedirectResponse(next_page, status_code=303, headers=HEADERS)
    max_age = max(1, int((signed.expires_at - utcnow()).total_seconds()))
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        expires=signed.expires_at,
        path="/site",
        secure=secure_cookie(request, settings),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/site")
    return response


def _start_session(request: Request, key_text: str | None) -> tuple[str, Signed]:
    factory = request.app.state.sessionmaker
    try:
        with session_scope(factory) as session:
            return sessions.sign_in(session, key_text)
    except Unauthorized as e:
        with session_scope(factory) as session:  # the denial is recorded on its own, as the API's are
            auth_service.record_denial(session, actor="anonymous", route="POST /site/sign-in", reason=e.code)
        raise


@router.post("/sign-out", openapi_extra=form_limit())
async def sign_out(request: Request) -> Response:
    factory = request.app.state.sessionmaker

    def find() -> Signed | None:
        with session_scope(factory) as session:
            return sessions.current(session, request.cookies.get(COOKIE))

    signed = await run_in_threadpool(find)  # who asks, before a byte of the form is read
    if signed is None:
        return RedirectResponse("/site/sign-in", status_code=303, headers=HEADERS)
    form = await request.form()
    if not sessions.tokens_match(signed.csrf_token, form.get("csrf")):
        return refused(request, signed)

    def end() -> None:
        with session_scope(factory) as session:
            sessions.sign_out(session, signed)

    await run_in_threadpool(end)
    response = RedirectResponse("/site/sign-in?signed_out=1", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/site")
    return response
