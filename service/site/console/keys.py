"""The console's API keys: list, create, rotate, revoke (service.auth, as `evalgate keys`). A key's
secret is in one place only: the body of the answer to the POST that made it (no-store), never in a
URL, a redirect, a log line or a stored row."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.auth import service as auth_service
from service.auth.roles import Role
from service.db import utcnow
from service.deps import SessionDep
from service.errors import EvalgateError
from service.ingress import form_limit
from service.site.console.access import (
    in_transaction,
    operator_form,
    page_refusal,
    see_other,
    text,
)
from service.site.rendering import SignedDep, render
from service.site.sessions import Signed

router = APIRouter(include_in_schema=False)  # under /site/console: endpoints.py includes it


EXPIRIES = ("12h", "7d", "30d", "90d")


def _keys_page(
    request: Request,
    signed: Signed,
    session: Any,
    status: int = 200,
    notice: str = "",
    problem: str = "",
    typed: dict[str, str] | None = None,
) -> Response:
    now = utcnow()
    keys = auth_service.list_keys(session)
    return render(
        request,
        "console/keys.html",
        signed,
        status,
        keys=keys,
        state=lambda k: auth_service.key_state(k, now),
        roles=list(Role),
        expiries=EXPIRIES,
        notice=notice,
        problem=problem,
        typed=typed or {"name": "", "role": Role.PARTNER, "expires": "30d"},
        section="keys",
    )


@router.get("/keys", name="console_keys")
def keys_page(request: Request, signed: SignedDep, session: SessionDep, revoked: str = "") -> Response:
    refusal = page_refusal(request, signed)
    if refusal is not None:
        return refusal
    assert signed is not None
    notice = f"Key {revoked[:32]} is revoked: it and every session made from it stop working now." if revoked else ""
    return _keys_page(request, signed, session, notice=notice)


def _secret_page(request: Request, signed: Signed, what: str, key: Any, secret: str) -> Response:
    """The one time a secret is shown: in the body of this answer (no-store), never anywhere else."""
    return render(
        request,
        "console/key_shown.html",
        signed,
        what=what,
        key_id=key.key_id,
        principal=key.principal.name,
        role=key.principal.role,
        expires_at=key.expires_at,
        secret=secret,
        section="keys",
    )


@router.post("/keys/create", openapi_extra=form_limit())
async def create_key(request: Request) -> Response:
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    typed = {"name": text(form, "name", 64), "role": text(form, "role", 16), "expires": text(form, "expires", 8)}

    def create(session: Any) -> tuple[Any, str]:
        key, secret = auth_service.create_key(
            session,
            name=typed["name"],
            role=typed["role"],
            expires_in=auth_service.parse_duration(typed["expires"]),
            actor=signed.caller.actor,
        )
        return key, secret

    try:
        key, secret = await in_transaction(request, create)
    except EvalgateError as e:
        problem, status = f"No key was created: {e.detail}.", e.status_code
        return await in_transaction(
            request, lambda s: _keys_page(request, signed, s, status, problem=problem, typed=typed)
        )
    return _secret_page(request, signed, "created", key, secret)


@router.post("/keys/rotate", openapi_extra=form_limit())
async def rotate_key(request: Request) -> Response:
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    key_id, grace = text(form, "key_id", 32), text(form, "grace", 8)

    def rotate(session: Any) -> tuple[Any, str]:
        return auth_service.rotate_key(
            session,
            key_id,
            expires_in=auth_service.parse_duration(text(form, "expires", 8) or "30d"),
            grace=auth_service.parse_duration(grace) if grace else timedelta(0),
            actor=signed.caller.actor,
        )

    try:
        key, secret = await in_transaction(request, rotate)
    except EvalgateError as e:
        problem, status = f"Key {key_id} was not rotated: {e.detail}.", e.status_code
        return await in_transaction(request, lambda s: _keys_page(request, signed, s, status, problem=problem))
    return _secret_page(request, signed, f"rotated from {key_id}", key, secret)


@router.post("/keys/revoke", openapi_extra=form_limit())
async def revoke_key(request: Request) -> Response:
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    key_id = text(form, "key_id", 32)
    try:
        await in_transaction(request, lambda s: auth_service.revoke_key(s, key_id, actor=signed.caller.actor))
    except EvalgateError as e:
        problem, status = f"Key {key_id} was not revoked: {e.detail}.", e.status_code
        return await in_transaction(request, lambda s: _keys_page(request, signed, s, status, problem=problem))
    return see_other(f"/site/console/keys?revoked={key_id}")
