"""Every query of the sanctions domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.sanctions.models import PartnerSuspension, PartnerTrip, Rule


def add_trip(session: Session, principal_id: int, rule: Rule, subject: str, at: datetime) -> None:
    session.add(PartnerTrip(principal_id=principal_id, rule=rule, subject=subject[:96], at=at))
    session.flush()


def trips_between(
    session: Session, principal_id: int, start: datetime, end: datetime, after: datetime | None = None
) -> dict[Rule, int]:
    """Trips of one partner with `start` <= at <= `end` (and later than `after`), counted by rule."""
    q = select(PartnerTrip.rule, func.count()).where(
        PartnerTrip.principal_id == principal_id, PartnerTrip.at >= start, PartnerTrip.at <= end
    )
    if after is not None:
        q = q.where(PartnerTrip.at > after)
    rows = session.execute(q.group_by(PartnerTrip.rule)).all()
    return {Rule(rule): int(n) for rule, n in rows}


def active(session: Session, principal_id: int) -> PartnerSuspension | None:
    return session.execute(
        select(PartnerSuspension)
        .where(PartnerSuspension.principal_id == principal_id, PartnerSuspension.lifted_at.is_(None))
        .order_by(PartnerSuspension.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def last_lifted_at(session: Session, principal_id: int) -> datetime | None:
    return session.execute(
        select(func.max(PartnerSuspension.lifted_at)).where(PartnerSuspension.principal_id == principal_id)
    ).scalar_one_or_none()


def history(session: Session, principal_id: int, limit: int = 20) -> list[PartnerSuspension]:
    return list(
        session.execute(
            select(PartnerSuspension)
            .where(PartnerSuspension.principal_id == principal_id)
            .order_by(PartnerSuspension.id.desc())
            .limit(limit)
        ).scalars()
    )
