"""What every page of the site shares: templates, headers, the signed-in caller, error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from service.config import Settings
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
