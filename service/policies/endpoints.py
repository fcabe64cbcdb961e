"""HTTP for live quotas and policies: read them (ETag), change them (If-Match, a reason; operators)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from service.auth.dependencies import AnyCaller, Operator, PartnerOrOperator
from service.auth.roles import Role
from service.deps import SessionDep, SettingsDep
from service.errors import raises
from service.policies import catalogue, errors
from service.policies import service as policies
from service.policies.schemas import (
    DatasetPolicyRead,
    DatasetPolicyUpdate,
    DatasetPolicyValues,
    PartnerPolicyChange,
    PartnerPolicyRead,
    PartnerPolicyUpdate,
    PartnerPolicyValues,
    PolicyRuleRead,
)

router = APIRouter(prefix="/v1/policies", tags=["policies"])
_ETAG = re.compile(r'^(?:W/)?"(\d{1,9})"$')


def etag(version: int) -> str:
    return f'"{version}"'


@raises(errors.IfMatchRequired, errors.PolicyChanged)
def expected_version(if_match: Annotated[str | None, Header(description="the ETag of your last read")] = None) -> int:
    """The version a change applies to: If-Match is required, and one naming no version never matches."""
    if if_match is None:
        raise errors.IfMatchRequired("send If-Match with the ETag of your last read of this policy")
    m = _ETAG.match(if_match.strip())
    if m is None:
        raise errors.PolicyChanged(f"If-Match {if_match!r} names no version of this policy")
    return int(m.group(1))


IfMatch = Annotated[int, Depends(expected_version)]


@router.get("", response_model=list[PolicyRuleRead])
def read_catalogue(caller: AnyCaller, settings: SettingsDep) -> list[PolicyRuleRead]:
    """The policy catalogue: each rule admission, the gate and the sidecar apply, its parameters and why."""
    return [
        PolicyRuleRead(
            id=r.id,
            stage=r.stage,
            rationale=r.rationale,
            parameters=r.parameters(settings),
            errors=[str(e.code) for e in r.errors],
            outcomes=[str(o) for o in r.outcomes],
        )
        for r in catalogue.RULES
    ]


@router.get("/partners", response_model=list[PartnerPolicyRead])
def read_partner_policies(caller: Operator, session: SessionDep, settings: SettingsDep) -> list[PartnerPolicyRead]:
    """Every partner's limits, public name and usable models and datasets (operators)."""
    return policies.read_partners(session, settings)


@router.get("/partners/{partner}", response_model=PartnerPolicyRead)
@raises(errors.PolicySubjectNotFound)
def read_partner_policy(
    partner: str, caller: PartnerOrOperator, session: SessionDep, settings: SettingsDep, response: Response
) -> PartnerPolicyRead:
    """A partner's limits, public name and usable models and datasets (operators; a partner, its own)."""
    if caller.role == Role.PARTNER and partner != caller.name:
        raise errors.PolicySubjectNotFound(f"no partner {partner}")
    found = policies.read_partner(session, settings, partner)
    response.headers["ETag"] = etag(found.version)
    return found


@router.get("/partners/{partner}/history", response_model=list[PartnerPolicyChange])
@raises(errors.PolicySubjectNotFound)
def read_partner_policy_history(partner: str, caller: Operator, session: SessionDep) -> list[PartnerPolicyChange]:
    """Every change of a partner's policy, newest first: who, old, new, reason, when (operators)."""
    return policies.partner_history(session, partner)


@router.put("/partners/{partner}", response_model=PartnerPolicyRead)
@raises(errors.PolicySubjectNotFound, errors.ReasonRequired, errors.UnknownAsset)
def write_partner_policy(
    partner: str,
    caller: Operator,
    body: PartnerPolicyUpdate,
    version: IfMatch,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> PartnerPolicyRead:
    """Replace what is set for a partner (left out or null: the default), with a reason (operators)."""
    values = PartnerPolicyValues.model_validate(body.model_dump(exclude={"reason"}))
    found = policies.set_partner(
        session, settings, partner, values, reason=body.reason, actor=caller.actor, if_match=version
    )
    response.headers["ETag"] = etag(found.version)
    return found


@router.get("/datasets/{name}/{version}", response_model=DatasetPolicyRead)
@raises(errors.PolicySubjectNotFound)
def read_dataset_policy(
    name: str, version: str, caller: AnyCaller, session: SessionDep, settings: SettingsDep, response: Response
) -> DatasetPolicyRead:
    """The privacy and release policy of a dataset version (every role)."""
    found = policies.read_dataset(session, settings, name, version)
    response.headers["ETag"] = etag(found.version)
    return found


@router.get("/datasets/{name}/{version}/history", response_model=list[PartnerPolicyChange])
@raises(errors.PolicySubjectNotFound)
def read_dataset_policy_history(
    name: str, version: str, caller: Operator, session: SessionDep
) -> list[PartnerPolicyChange]:
    """Every change of a dataset version's policy, newest first: who, old, new, reason, when (operators)."""
    return policies.dataset_history(session, name, version)


@router.put("/datasets/{name}/{version}", response_model=DatasetPolicyRead)
@raises(errors.PolicySubjectNotFound, errors.ReasonRequired, errors.PolicyInvalid)
def write_dataset_policy(
    name: str,
    version: str,
    caller: Operator,
    body: DatasetPolicyUpdate,
    expected: IfMatch,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> DatasetPolicyRead:
    """Replace what is set for a dataset version (left out or null: the default), with a reason (operators)."""
    values = DatasetPolicyValues.model_validate(body.model_dump(exclude={"reason"}))
    found = policies.set_dataset(
        session, settings, name, version, values, reason=body.reason, actor=caller.actor, if_match=expected
    )
    response.headers["ETag"] = etag(found.version)
    return found
