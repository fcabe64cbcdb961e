from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select

from service.auth.dependencies import AnyCaller
from service.auth.models import Principal
from service.deps import SessionDep, SettingsDep
from service.errors import Forbidden, NotFound
from service.quotas import service as quotas_service
from service.quotas.schemas import BudgetRead

router = APIRouter(prefix="/v1/budget", tags=["budget"])


@router.get("", response_model=BudgetRead)
def read_budget(
    request: Request, caller: AnyCaller, session: SessionDep, settings: SettingsDep, partner: str | None = None
) -> BudgetRead:
    """Bits, ε, model rows, releases and jobs in progress: used and left. Operators may name a partner."""
    if partner is None or partner == caller.name:
        if caller.role != "partner":
            raise NotFound("only partners have budgets; name one with ?partner=", code="partner_required")
        principal_id, name = caller.principal_id, caller.name
    else:
        if caller.role != "operator":
            raise Forbidden("only operators may read another partner's budget", code="wrong_role")
        found = session.execute(
            select(Principal).where(Principal.name == partner, Principal.role == "partner")
        ).scalar_one_or_none()
        if found is None:
            raise NotFound(f"no partner {partner}", code="partner_not_found")
        principal_id, name = found.id, found.name
    state = request.app.state
    return quotas_service.budget(
        session, settings, principal_id, name, rows=state.quota, bits=state.bits, guards=state.guards
    )
