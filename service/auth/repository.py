"""Every query of the auth domain."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth.models import ApiKey, Principal
from service.auth.roles import Role


def principal_by_name(session: Session, name: str, role: Role | None = None) -> Principal | None:
    q = select(Principal).where(Principal.name == name)
    if role is not None:
        q = q.where(Principal.role == role)
    return session.execute(q).scalar_one_or_none()


def key_by_id(session: Session, key_id: str) -> ApiKey | None:
    return session.execute(select(ApiKey).where(ApiKey.key_id == key_id)).scalar_one_or_none()


def keys(session: Session, name: str | None = None) -> list[ApiKey]:
    """Every key (of one principal), oldest first."""
    q = select(ApiKey).join(Principal, Principal.id == ApiKey.principal_id)
    if name is not None:
        q = q.where(Principal.name == name)
    return list(session.execute(q.order_by(ApiKey.id)).scalars())


def names_with_role(session: Session, role: Role) -> list[str]:
    return list(
        session.execute(select(Principal.name).where(Principal.role == role).order_by(Principal.name)).scalars()
    )
