"""HTTP for sanctions: a partner's suspension, read and lifted by operators."""

from __future__ import annotations

from fastapi import APIRouter

from service.auth.dependencies import Operator
from service.deps import SessionDep, SettingsDep
from service.errors import raises
from service.policies import errors as policy_errors
from service.sanctions import errors
from service.sanctions import service as sanctions
from service.sanctions.schemas import SuspensionLift, SuspensionRead

router = APIRouter(prefix="/v1/partners", tags=["sanctions"])


@router.get("/{partner}/suspension", response_model=SuspensionRead)
@raises(errors.SanctionSubjectNotFound)
def read_suspension(partner: str, caller: Operator, session: SessionDep, settings: SettingsDep) -> SuspensionRead:
    """A partner's suspension, today's hard-rule trips and its limit (operators)."""
    return sanctions.read(session, settings, partner)


@router.post("/{partner}/suspension/lift", response_model=SuspensionRead)
@raises(errors.SanctionSubjectNotFound, errors.PartnerNotSuspended, policy_errors.ReasonRequired)
def lift_suspension(
    partner: str, body: SuspensionLift, caller: Operator, session: SessionDep, settings: SettingsDep
) -> SuspensionRead:
    """Lift a partner's suspension, with a reason (operators); its trips so far stop counting."""
    return sanctions.lift(session, settings, partner, body.reason, caller.actor)
