"""Signing in to the site: an API key pasted once becomes a server-side session, named by a random
token in an HttpOnly, SameSite=Strict cookie.

Why a session table rather than a signed cookie: sign-out must end the session on the server (a
signed cookie stays valid until it expires unless a revocation list is kept, which is a table
anyway), and the key's own revocation must end it at once. Each request looks the session up and
checks its key again (`current`), so a revoked or expired key ends every session made from it.
A session lasts `MAX_AGE` and never past its key's expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.auth import repository as auth_repo
from service.auth import service as auth_service
from service.auth.roles import Role
from service.auth.service import Caller
from service.db import utcnow
from service.keyfiles import server_secret
from service.ledger import service as ledger
from service.site.models import SiteSession

COOKIE = "evalgate_session"
# Before sign-in there is no session to hold a CSRF token: the sign-in form's token is this cookie's
# value, and the POST must carry both (double submit; SameSite=Strict keeps other sites from sending it).
SIGN_IN_COOKIE = "evalgate_sign_in"
MAX_AGE = timedelta(hours=12)
_TOKEN_CHARS = 43  # secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Signed:
    """A signed-in browser: who it acts as (the same Caller its key would be), and its form token."""

    caller: Caller
    session_id: int
    csrf_token: str
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def sign_in(session: Session, key_text: str | None, now: datetime | None = None) -> tuple[str, Signed]:
    """A new session for a valid key: (the cookie's token, the session). Raises what
    `auth.service.authenticate` raises for a bad key (Unauthorized)."""
    now = now or utcnow()
    caller = auth_service.authenticate(session, key_text, now)
    key = auth_repo.key_by_id(session, caller.key_id)
    assert key is not None  # it just authenticated
    session.execute(delete(SiteSession).where(SiteSession.expires_at <= now))  # leftovers of every browser
    token = new_token()
    row = SiteSession(
        token_sha256=_digest(token),
        api_key_id=key.id,
        csrf_token=new_token(),
        created_at=now,
        expires_at=min(key.expires_at, now + MAX_AGE),
    )
    session.add(row)
    session.flush()
    ledger.append(
        session,
        actor=caller.actor,
        action="session.started",
        subject=f"principal:{caller.name}",
        data={"key_id": caller.key_id, "session": row.id, "expires_at": row.expires_at.isoformat()},
    )
    return token, Signed(caller, row.id, row.csrf_token, row.expires_at)


def current(session: Session, token: str | None, now: datetime | None = None) -> Signed | None:
    """The session a cookie names, if it and its key are still good; else None."""
    if not token or len(token) != _TOKEN_CHARS:
        return None
    now = now or utcnow()
    row = session.execute(select(SiteSession).where(SiteSession.token_sha256 == _digest(token))).scalar_one_or_none()
    if row is None or row.expires_at <= now:
        return None
    key = row.api_key
    if key.revoked_at is not None or key.expires_at <= now:
        return None
    principal = key.principal
    caller = Caller(principal_id=principal.id, name=principal.name, role=Role(principal.role), key_id=key.key_id)
    return Signed(caller, row.id, row.csrf_token, row.expires_at)


def sign_out(session: Session, signed: Signed) -> None:
    """End the session on the server: its cookie is worthless from now on."""
    session.execute(delete(SiteSession).where(SiteSession.id == signed.session_id))
    ledger.append(
        session,
        actor=signed.caller.actor,
        action="session.ended",
        subject=f"principal:{signed.caller.name}",
        data={"session": signed.session_id},
    )


def tokens_match(expected: str | None, given: object) -> bool:
    """A form's CSRF token against the one expected, in constant time."""
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# -- pseudonyms ------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def site_secret(path: Path) -> bytes:
    """The server secret pseudonyms are made with, made (0600) on first use beside the signing key."""
    return server_secret(path)


def pseudonym(secret: bytes, principal_id: int) -> str:
    """A partner's public name until operators can set one: stable, and meaningless without the
    secret (an HMAC of its id, so nobody can test a guessed partner against it)."""
    mac = hmac.new(secret, f"evalgate-site-partner:{principal_id}".encode(), hashlib.sha256).hexdigest()
    return f"partner-{mac[:10]}"
