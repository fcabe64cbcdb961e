"""What every page of the site shares: templates, headers, the signed-in caller, error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from service.auth.roles import Role
from service.config import Settings
from service.db import session_scope
from service.deps import SessionDep
from service.site import sessions
from service.site.problems import PageError
from service.site.sessions import COOKIE, Signed

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# No script or style from anywhere but this app; no framing; forms post only here.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def secret_of(settings: Settings) -> bytes:
    return sessions.site_secret(settings.data_dir / "keys" / "site.secret")


def render(request: Request, template: str, signed: Signed | None, status: int = 200, **context: Any) -> Response:
    response = templates.TemplateResponse(
        request, template, {"signed": signed, **context}, status_code=status, headers=HEADERS
    )
    return response


def error_page(request: Request, signed: Signed | None, e: PageError) -> Response:
    return render(request, "error.html", signed, e.status, title=e.title, message=e.message)


def signed_in(request: Request, session: SessionDep) -> Signed | None:
    return sessions.current(session, request.cookies.get(COOKIE))


SignedDep = Annotated[Signed | None, Depends(signed_in)]


def to_sign_in(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = request.url_for("sign_in_page").include_query_params(next=target)
    return RedirectResponse(str(url.path) + "?" + url.query, status_code=303, headers=HEADERS)


# To a signed-in person of another role, a page of one role's is one that does not exist: the same 404
# as any unknown address, so it does not even say that there is something they may not see.
NOT_FOUND = PageError(
    404, "Page not found", "There is no page at this address. The leaderboards list is a good place to start."
)


def role_refusal(request: Request, signed: Signed | None, role: Role) -> Response | None:
    """None if a person of `role` is signed in; else the answer: sign in first, or not found."""
    if signed is None:
        return to_sign_in(request)
    if signed.caller.role != role:
        return error_page(request, signed, NOT_FOUND)
    return None


async def form_sender(request: Request, role: Role) -> Signed | Response:
    """Who sends a form, from the session cookie alone and before a byte of the form is read: the
    signed-in person of `role`, or the answer (sign in first, or not found). Off the event loop."""
    factory = request.app.state.sessionmaker

    def find() -> Signed | None:
        with session_scope(factory) as session:
            return sessions.current(session, request.cookies.get(COOKIE))

    signed = await run_in_threadpool(find)
    if signed is None:  # a form's address is no page to come back to after signing in
        return RedirectResponse("/site/sign-in", status_code=303, headers=HEADERS)
    return role_refusal(request, signed, role) or signed


def secure_cookie(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.site_cookie_secure


def refused(request: Request, signed: Signed | None) -> Response:
    """A form that came without this site's token (CSRF): nothing it asked is done."""
    return error_page(
        request,
        signed,
        PageError(
            403,
            "This form could not be accepted",
            "It did not carry this site's form token, so it may not have come from a page of this site (or "
            "the page was open for too long). Go back, reload the page and try again.",
        ),
    )
