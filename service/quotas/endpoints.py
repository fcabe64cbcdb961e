"""HTTP for budgets: what a partner has used and has left."""

from __future__ import annotations

from fastapi import APIRouter

from service.auth import repository as auth_repo
from service.auth.dependencies import AnyCaller
from service.auth.errors import WrongRole
from service.auth.roles import Role
from service.deps import SessionDep
from service.errors import raises
from service.quotas import errors
from service.quotas.dependencies import BudgetsDep
from service.quotas.schemas import BudgetRead
from service.quotas.service import Partner

router = APIRouter(prefix="/v1/budget", tags=["budget"])


@router.get("", response_model=BudgetRead)
@raises(errors.PartnerRequired, WrongRole, errors.PartnerNotFound)
def read_budget(caller: AnyCaller, session: SessionDep, budgets: BudgetsDep, partner: str | None = None) -> BudgetRead:
    """Bits, ε, model rows, releases and jobs in progress: used and left. Operators may name a partner."""
    if partner is None or partner == caller.name:
        if caller.role != Role.PARTNER:
            raise errors.PartnerRequired("only partners have budgets; name one with ?partner=")
        return budgets.read(session, Partner(caller.principal_id, caller.name))
    if caller.role != Role.OPERATOR:
        raise WrongRole("only operators may read another partner's budget")
    found = auth_repo.principal_by_name(session, partner, Role.PARTNER)
    if found is None:
        raise errors.PartnerNotFound(f"no partner {partner}")
    return budgets.read(session, Partner(found.id, found.name))
