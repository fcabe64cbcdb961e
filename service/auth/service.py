"""API keys: creation (shown once), authentication, revocation."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session

from service.auth import errors
from service.auth import repository as repo
from service.auth.models import RESERVED_NAME, ApiKey, Principal
from service.auth.roles import Role
from service.db import utcnow
from service.ledger import service as ledger

_KEY_RE = re.compile(r"^eg_([A-Za-z0-9]{16})_([A-Za-z0-9_-]{43})$")
_DURATION_RE = re.compile(r"^(\d{1,5})([hdw])$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Caller:
    """Who is calling, as endpoints and services see it."""

    principal_id: int
    name: str
    role: Role
    key_id: str

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"


def parse_duration(text: str) -> timedelta:
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise errors.InvalidDuration(f"expiry {text!r} is not a duration like 12h, 30d or 2w")
    n, unit = int(m.group(1)), m.group(2)
    if n <= 0:
        raise errors.InvalidDuration("expiry must be positive")
    return timedelta(hours=n) if unit == "h" else timedelta(days=n * (7 if unit == "w" else 1))


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session, *, name: str, role: str, expires_in: timedelta, actor: str = "cli"
) -> tuple[ApiKey, str]:
    """Create the principal if new and a key for it. Returns the plaintext key, which is never stored."""
    if role not in set(Role):
        raise errors.InvalidRole(f"unknown role {role!r}", alternatives=list(Role))
    role = Role(role)
    if not _NAME_RE.match(name):
        raise errors.InvalidPrincipalName("name must be 1-64 of a-z 0-9 _ . -")
    if name == RESERVED_NAME:
        raise errors.PrincipalNameReserved(
            f"{name!r} is the namespace of the built-in suites", alternatives=["choose another name"]
        )
    principal = repo.principal_by_name(session, name)
    if principal is None:
        principal = Principal(name=name, role=role)
        session.add(principal)
        session.flush()
    elif principal.role != role:
        raise errors.RoleMismatch(
            f"principal {name!r} already exists with role {principal.role}",
            alternatives=[f"create the key with --role {principal.role}", "choose another name"],
        )
    key_id = "".join(
        secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(16)
    )
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        key_id=key_id, secret_sha256=_hash_secret(secret), principal=principal, expires_at=utcnow() + expires_in
    )
    session.add(key)
    session.flush()
    ledger.append(
        session,
        actor=actor,
        action="key.created",
        subject=f"principal:{name}",
        data={"key_id": key_id, "role": role, "expires_at": key.expires_at.isoformat()},
    )
    return key, f"eg_{key_id}_{secret}"


class KeyState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


def key_state(key: ApiKey, now: datetime | None = None) -> KeyState:
    if key.revoked_at is not None:
        return KeyState.REVOKED
    return KeyState.EXPIRED if key.expires_at <= (now or utcnow()) else KeyState.ACTIVE


def list_keys(session: Session, name: str | None = None) -> list[ApiKey]:
    """Every key (of one principal), oldest first; only its id and dates, never a secret (none is kept)."""
    return repo.keys(session, name)


def revoke_key(session: Session, key_id: str, actor: str = "cli") -> ApiKey:
    key = repo.key_by_id(session, key_id)
    if key is None:
        raise errors.KeyNotFound(f"no key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        ledger.append(
            session,
            actor=actor,
            action="key.revoked",
            subject=f"principal:{key.principal.name}",
            data={"key_id": key_id},
        )
    return key


def rotate_key(
    session: Session, key_id: str, *, expires_in: timedelta, grace: timedelta = timedelta(0), actor: str = "cli"
) -> tuple[ApiKey, str]:
    """A new key for the same principal and role; the old one stops working after `grace` (at once
    by default). Returns the new key and its plaintext, which is never stored."""
    old = repo.key_by_id(session, key_id)
    if old is None:
        raise errors.KeyNotFound(f"no key {key_id}")
    if old.revoked_at is not None:
        raise errors.KeyRevoked(f"key {key_id} is revoked", alternatives=["create a new key"])
    principal = old.principal
    key, plaintext = create_key(session, name=principal.name, role=principal.role, expires_in=expires_in, actor=actor)
    if grace > timedelta(0):
        old.expires_at = min(old.expires_at, utcnow() + grace)
    else:
        old.revoked_at = utcnow()
    ledger.append(
        session,
        actor=actor,
        action="key.rotated",
        subject=f"principal:{principal.name}",
        data={
            "old_key_id": key_id,
            "new_key_id": key.key_id,
            "old_stops_at": (old.revoked_at or old.expires_at).isoformat(),
        },
    )
    return key, plaintext


def record_denial(session: Session, *, actor: str, route: str, reason: str | None, **data: str) -> None:
    """Audit a refused request (`access.denied`) in the session's transaction; the caller commits it."""
    ledger.append(
        session, actor=actor, action="access.denied", subject=f"route:{route}", data={"reason": reason, **data}
    )


def authenticate(session: Session, token: str | None, now: datetime | None = None) -> Caller:
    """Check a bearer token. Every failure raises Unauthorized with a reason that reveals no secret."""
    if not token:
        raise errors.MissingKey("missing bearer key")
    m = _KEY_RE.match(token)
    if not m:
        raise errors.InvalidKey("malformed key")
    key_id, secret = m.groups()
    key = repo.key_by_id(session, key_id)
    # Compare against a dummy hash when the key is unknown so timing does not reveal which ids exist.
    stored = key.secret_sha256 if key else "0" * 64
    if not hmac.compare_digest(stored, _hash_secret(secret)) or key is None:
        raise errors.InvalidKey("unknown key")
    if key.revoked_at is not None:
        raise errors.KeyRevoked("key revoked", alternatives=["ask an operator for a new key"])
    if key.expires_at <= (now or utcnow()):
        raise errors.KeyExpired("key expired", alternatives=["ask an operator for a new key"])
    return Caller(principal_id=key.principal_id, name=key.principal.name, role=Role(key.principal.role), key_id=key_id)
