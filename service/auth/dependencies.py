"""Who may call. `current_caller` authenticates once per request (FastAPI caches it); each role set
is a dependency on top of it, so a resource dependency can ask for the caller too without a second
lookup. A denial is audited in its own transaction: the request's own rolls back with the error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.auth import errors
from service.auth import service as auth_service
from service.auth.roles import Role
from service.auth.service import Caller
from service.deps import SessionDep
from service.errors import EvalgateError
from service.ledger import service as ledger


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _audit_denial(request: Request, session: Session, error: EvalgateError, who: str) -> None:
    """Nothing else of the request has been written yet; the denial is committed on its own."""
    session.rollback()
    ledger.append(
        session,
        actor=who,
        action="access.denied",
        subject=f"route:{request.method} {request.url.path}",
        data={"reason": error.code},
    )
    session.commit()


def current_caller(request: Request, session: SessionDep) -> Caller:
    try:
        return auth_service.authenticate(session, _bearer(request))
    except EvalgateError as e:
        _audit_denial(request, session, e, "anonymous")
        raise


def require_role(*roles: Role) -> Callable[..., Caller]:
    def dependency(request: Request, session: SessionDep, caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        if caller.role not in roles:
            error = errors.WrongRole(
                f"role {caller.role} may not do this", alternatives=[f"use a key with role {' or '.join(roles)}"]
            )
            _audit_denial(request, session, error, caller.actor)
            raise error
        return caller

    return dependency


Partner = Annotated[Caller, Depends(require_role(Role.PARTNER))]
Operator = Annotated[Caller, Depends(require_role(Role.OPERATOR))]
AnyCaller = Annotated[Caller, Depends(require_role(Role.PARTNER, Role.RESEARCHER, Role.OPERATOR))]
PartnerOrOperator = Annotated[Caller, Depends(require_role(Role.PARTNER, Role.OPERATOR))]
