"""Who may call. Ingress (service/ingress.py) authenticates before the body is read and leaves the
caller in the request's state; `current_caller` takes it from there (and authenticates itself only in
an app without ingress). Each role set is a dependency on top of it, so a resource dependency can ask
for the caller too without a second lookup. A denial is audited in its own transaction: the request's
own rolls back with the error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from service.auth import errors
from service.auth import service as auth_service
from service.auth.roles import Role
from service.auth.service import Caller
from service.deps import SessionDep
from service.errors import EvalgateError, raises

# Where ingress leaves the authenticated caller: request.state.caller.
CALLER_STATE = "caller"


def bearer_token(authorization: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header's value."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _audit_denial(request: Request, session: Session, error: EvalgateError, who: str) -> None:
    """Nothing else of the request has been written yet; the denial is committed on its own."""
    session.rollback()
    # The route's template (bounded), not the path as sent.
    route = getattr(request.scope.get("route"), "path", None) or request.url.path[:200]
    auth_service.record_denial(session, actor=who, route=f"{request.method} {route}", reason=error.code)
    session.commit()


async def current_caller(request: Request, session: SessionDep) -> Caller:
    """The caller ingress authenticated (no I/O: no worker thread), else authenticated here."""
    found = getattr(request.state, CALLER_STATE, None)
    if isinstance(found, Caller):
        return found
    return await run_in_threadpool(_authenticate, request, session)


def _authenticate(request: Request, session: Session) -> Caller:
    try:
        return auth_service.authenticate(session, bearer_token(request.headers.get("authorization", "")))
    except EvalgateError as e:
        _audit_denial(request, session, e, "anonymous")
        raise


def wrong_role(caller: Caller, roles: tuple[Role, ...]) -> errors.WrongRole | None:
    """The refusal of a caller whose role is not among `roles`, or None."""
    if caller.role in roles:
        return None
    return errors.WrongRole(
        f"role {caller.role} may not do this", alternatives=[f"use a key with role {' or '.join(roles)}"]
    )


# The roles each require_role dependency admits: ingress reads them from the route, so a key of the
# wrong role is refused before a body is read (an upload may be hundreds of MiB).
ROLES_ADMITTED: dict[Callable[..., Awaitable[Caller]], tuple[Role, ...]] = {}


def require_role(*roles: Role) -> Callable[..., Awaitable[Caller]]:
    async def dependency(
        request: Request, session: SessionDep, caller: Annotated[Caller, Depends(current_caller)]
    ) -> Caller:
        error = wrong_role(caller, roles)
        if error is not None:
            await run_in_threadpool(_audit_denial, request, session, error, caller.actor)
            raise error
        return caller

    ROLES_ADMITTED[dependency] = roles
    # A check that admits every role refuses no one: only a narrower one can answer 403.
    return raises(errors.WrongRole)(dependency) if set(roles) != set(Role) else dependency


Partner = Annotated[Caller, Depends(require_role(Role.PARTNER))]
Operator = Annotated[Caller, Depends(require_role(Role.OPERATOR))]
AnyCaller = Annotated[Caller, Depends(require_role(Role.PARTNER, Role.RESEARCHER, Role.OPERATOR))]
PartnerOrOperator = Annotated[Caller, Depends(require_role(Role.PARTNER, Role.OPERATOR))]
