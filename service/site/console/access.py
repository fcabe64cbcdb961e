"""Who may open a console page or send a console form: an operator's session, and for a form its
CSRF token too, checked before anything the form asks is done."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from service.auth.roles import Role
from service.db import session_scope
from service.errors import EvalgateError
from service.site import sessions
from service.site.problems import PageError
from service.site.rendering import HEADERS, error_page, refused, to_sign_in
from service.site.sessions import COOKIE, Signed

T = TypeVar("T")

# To a researcher or a partner a console page is one that does not exist: the same 404 as any unknown
# address, so the page does not even say that there is something they may not see.
NOT_FOUND = PageError(
    404, "Page not found", "There is no page at this address. The leaderboards list is a good place to start."
)


def page_refusal(request: Request, signed: Signed | None) -> Response | None:
    """None if an operator is signed in; else the answer: sign in first, or not found."""
    if signed is None:
        return to_sign_in(request)
    if signed.caller.role != Role.OPERATOR:
        return error_page(request, signed, NOT_FOUND)
    return None


async def operator_form(request: Request) -> tuple[Signed, FormData] | Response:
    """The operator's session and the form, or the answer that refuses it. Who asks is settled from
    the cookie before a byte of the form is read; then the form must carry the session's token."""
    factory = request.app.state.sessionmaker

    def find() -> Signed | None:
        with session_scope(factory) as session:
            return sessions.current(session, request.cookies.get(COOKIE))

    signed = await run_in_threadpool(find)
    if signed is None:
        return RedirectResponse("/site/sign-in", status_code=303, headers=HEADERS)
    if signed.caller.role != Role.OPERATOR:
        return error_page(request, signed, NOT_FOUND)
    form = await request.form()
    if not sessions.tokens_match(signed.csrf_token, form.get("csrf")):
        return refused(request, signed)
    return signed, form


async def in_transaction(request: Request, work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction (committed if it returns, rolled back if it raises), off the loop."""
    factory = request.app.state.sessionmaker

    def run() -> T:
        with session_scope(factory) as session:
            return work(session)

    return await run_in_threadpool(run)


def text(form: FormData, name: str, max_chars: int = 2000) -> str:
    """A form field as text ('' when absent or a file), stripped and cut to `max_chars`."""
    value = form.get(name)
    return value.strip()[:max_chars] if isinstance(value, str) else ""


def see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def say(e: EvalgateError) -> str:
    """A refusal said for a person: the domain's detail, or plainer words for the common ones."""
    reasons = {
        "reason_required": "Say why you are making this change: the reason is recorded with it on the audit log.",
        "if_match_required": "The form did not say which version of the limits it was filled from. Reload the page.",
    }
    return reasons.get(e.code or "", str(e.detail))
