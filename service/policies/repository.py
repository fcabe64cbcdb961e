"""Every query of the policies domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth.models import Principal
from service.policies.models import DatasetPolicy, PartnerPolicy


def partner_policy(session: Session, principal_id: int) -> PartnerPolicy | None:
    return session.get(PartnerPolicy, principal_id, populate_existing=True)


def partner_policy_named(session: Session, name: str) -> PartnerPolicy | None:
    return session.execute(
        select(PartnerPolicy).join(Principal, Principal.id == PartnerPolicy.principal_id).where(Principal.name == name)
    ).scalar_one_or_none()


def dataset_policy(session: Session, dataset_version_id: int) -> DatasetPolicy | None:
    return session.get(DatasetPolicy, dataset_version_id, populate_existing=True)


def compare_and_set(
    session: Session, model: type[PartnerPolicy] | type[DatasetPolicy], key: int, expected: int, values: dict[str, Any]
) -> bool:
    """Write `values` if the row is still at version `expected` (and bump it); False if another change
    came first. Version 0 is the row not yet written."""
    if expected == 0:
        if session.get(model, key) is not None:
            return False
        try:
            with session.begin_nested():  # a concurrent first write makes this one lose, not fail
                session.add(model(**{_key(model): key}, version=1, **values))
        except IntegrityError:
            return False
        return True
    column = getattr(model, _key(model))
    result = session.execute(
        update(model)
        .where(column == key, model.version == expected)
        .values(version=model.version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def _key(model: type[PartnerPolicy] | type[DatasetPolicy]) -> str:
    return "principal_id" if model is PartnerPolicy else "dataset_version_id"


def public_names(session: Session, principal_ids: list[int]) -> dict[int, str]:
    rows = session.execute(
        select(Principal.id, Principal.name, PartnerPolicy.public_name)
        .outerjoin(PartnerPolicy, PartnerPolicy.principal_id == Principal.id)
        .where(Principal.id.in_(principal_ids))
    ).all()
    return {pid: public or name for pid, name, public in rows}
