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
from service.site.rendering import HEADERS, form_sender, refused, role_refusal
from service.site.sessions import Signed

T = TypeVar("T")


def page_refusal(request: Request, signed: Signed | None) -> Response | None:
    """None if an operator is signed in; else the answer: sign in first, or not found."""
    return role_refusal(request, signed, Role.OPERATOR)


async def operator_form(request: Request) -> tuple[Signed, FormData] | Response:
    """The operator's session and the form, or the answer that refuses it. Who asks is settled from
    the cookie before a byte of the form is read; then the form must carry the session's token."""
    signed = await form_sender(request, Role.OPERATOR)
    if isinstance(signed, Response):
        return signed
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
