"""Who may call: a dependency per role set. A denial is audited in its own transaction, because the
request's own transaction is rolled back with the error."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.auth import service as auth_service
from service.auth.service import Caller
from service.db import session_scope
from service.deps import SessionDep
from service.errors import EvalgateError, Forbidden
from service.ledger import service as ledger


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _audit_denial(request: Request, error: EvalgateError, who: str) -> None:
    with session_scope(request.app.state.sessionmaker) as s:
        ledger.append(
            s,
            actor=who,
            action="access.denied",
            subject=f"route:{request.method} {request.url.path}",
            data={"reason": error.code},
        )


def require_role(*roles: str):
    def dependency(request: Request, session: SessionDep) -> Caller:
        try:
            caller = auth_service.authenticate(session, _bearer(request))
        except EvalgateError as e:
            _audit_denial(request, e, "anonymous")
            raise
        if caller.role not in roles:
            error = Forbidden(
                f"role {caller.role} may not do this",
                code="wrong_role",
                alternatives=[f"use a key with role {' or '.join(roles)}"],
            )
            _audit_denial(request, error, caller.actor)
            raise error
        return caller

    return dependency


Partner = Annotated[Caller, Depends(require_role("partner"))]
Operator = Annotated[Caller, Depends(require_role("operator"))]
AnyCaller = Annotated[Caller, Depends(require_role("partner", "researcher", "operator"))]
PartnerOrOperator = Annotated[Caller, Depends(require_role("partner", "operator"))]
