"""Every query of the quotas domain: ε spent per (partner, dataset version), and reservations."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db import insert_if_missing, utcnow
from service.quotas.models import BudgetReservation, EpsilonSpend, LifetimeUsage

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

MICRO = 1_000_000


def epsilon_spent_micro(session: Session, principal_id: int, dataset_version_id: int) -> int:
    row = session.get(EpsilonSpend, (principal_id, dataset_version_id))
    return row.spent_micro if row else 0


def epsilon_spent_by_dataset(session: Session, principal_id: int) -> dict[int, int]:
    """Dataset version id → ε spent on it, in millionths."""
    rows = session.execute(
        select(EpsilonSpend.dataset_version_id, EpsilonSpend.spent_micro).where(
            EpsilonSpend.principal_id == principal_id
        )
    )
    return {dataset_id: micro for dataset_id, micro in rows}


def try_spend_epsilon(session: Session, principal_id: int, dataset_version_id: int, micro: int, cap: int) -> bool:
    """Add `micro` to the spend if it stays within `cap`; one conditional UPDATE, so two concurrent
    admissions can never both take the last of a budget. False (and nothing written) if it would not."""
    insert_if_missing(
        session, EpsilonSpend, principal_id=principal_id, dataset_version_id=dataset_version_id, spent_micro=0
    )
    done = cast(
        "CursorResult[Any]",  # an UPDATE's result, which Session.execute's annotation does not say
        session.execute(
            update(EpsilonSpend)
            .where(
                EpsilonSpend.principal_id == principal_id,
                EpsilonSpend.dataset_version_id == dataset_version_id,
                EpsilonSpend.spent_micro + micro <= cap,
            )
            .values(spent_micro=EpsilonSpend.spent_micro + micro)
            .execution_options(synchronize_session=False)
        ),
    )
    return done.rowcount == 1


def give_back_epsilon(session: Session, principal_id: int, dataset_version_id: int, micro: int) -> None:
    session.execute(
        update(EpsilonSpend)
        .where(EpsilonSpend.principal_id == principal_id, EpsilonSpend.dataset_version_id == dataset_version_id)
        .values(spent_micro=EpsilonSpend.spent_micro - micro)
        .execution_options(synchronize_session=False)
    )


def open_reservations(session: Session, principal_id: int) -> int:
    """Jobs of the partner admitted and not yet settled: its jobs in progress."""
    q = select(func.count()).select_from(BudgetReservation)
    return session.execute(
        q.where(BudgetReservation.principal_id == principal_id, BudgetReservation.settled.is_(False))
    ).scalar_one()


def reservation(session: Session, job_id: str) -> BudgetReservation | None:
    return session.get(BudgetReservation, job_id)


def claim_settlement(session: Session, job_id: str) -> BudgetReservation | None:
    """Mark an ended reservation applied, once: the caller that gets it back applies it; every other
    caller (a redelivered task, a concurrent reader) gets None."""
    done = cast(
        "CursorResult[Any]",
        session.execute(
            update(BudgetReservation)
            .where(
                BudgetReservation.job_id == job_id,
                BudgetReservation.ended.is_(True),
                BudgetReservation.settled.is_(False),
            )
            .values(settled=True, settled_at=utcnow())
            .execution_options(synchronize_session=False)
        ),
    )
    if done.rowcount != 1:
        return None
    return session.execute(
        select(BudgetReservation).where(BudgetReservation.job_id == job_id).execution_options(populate_existing=True)
    ).scalar_one()


def lifetime_used(session: Session, scope: str, asset_id: int, principal_id: int, resource: str) -> int:
    row = session.get(LifetimeUsage, (scope, asset_id, principal_id, resource))
    return row.amount if row else 0


def lifetime_used_by(session: Session, principal_id: int) -> dict[tuple[str, int, str], int]:
    """(scope, asset id, resource) → amount, for one partner."""
    rows = session.execute(select(LifetimeUsage).where(LifetimeUsage.principal_id == principal_id)).scalars()
    return {(r.scope, r.asset_id, r.resource): r.amount for r in rows}


def lifetime_locked_left(
    session: Session, scope: str, asset_id: int, principal_id: int, resource: str, cap: int
) -> int:
    """What is left under `cap`, with the counter's row locked until the transaction ends (a no-op
    UPDATE takes the row lock on Postgres, the write lock on SQLite) so concurrent admissions queue."""
    key = dict(scope=scope, asset_id=asset_id, principal_id=principal_id, resource=resource)
    insert_if_missing(session, LifetimeUsage, **key, amount=0)
    where = [getattr(LifetimeUsage, k) == v for k, v in key.items()]
    session.execute(update(LifetimeUsage).where(*where).values(amount=LifetimeUsage.amount))
    used = session.execute(select(LifetimeUsage.amount).where(*where)).scalar_one()
    return cap - int(used)


def lifetime_add(session: Session, scope: str, asset_id: int, principal_id: int, resource: str, amount: int) -> None:
    insert_if_missing(
        session, LifetimeUsage, scope=scope, asset_id=asset_id, principal_id=principal_id, resource=resource, amount=0
    )
    session.execute(
        update(LifetimeUsage)
        .where(
            LifetimeUsage.scope == scope,
            LifetimeUsage.asset_id == asset_id,
            LifetimeUsage.principal_id == principal_id,
            LifetimeUsage.resource == resource,
        )
        .values(amount=LifetimeUsage.amount + amount)
        .execution_options(synchronize_session=False)
    )


def end_reservation(
    session: Session, job_id: str, *, ran: bool, rows_used: int | None, settle_at: datetime
) -> BudgetReservation | None:
    """Record, once, that the job ended and when what it gives back is applied; None if it was
    recorded already (or the job never reserved)."""
    done = cast(
        "CursorResult[Any]",
        session.execute(
            update(BudgetReservation)
            .where(BudgetReservation.job_id == job_id, BudgetReservation.ended.is_(False))
            .values(ended=True, ran=ran, rows_used=rows_used, settle_at=settle_at)
            .execution_options(synchronize_session=False)
        ),
    )
    return reservation(session, job_id) if done.rowcount == 1 else None


def due(session: Session, principal_id: int | None, now: datetime) -> list[str]:
    """Ended reservations whose settlement time has come, not yet applied (one partner's, or all)."""
    q = select(BudgetReservation.job_id).where(
        BudgetReservation.ended.is_(True), BudgetReservation.settled.is_(False), BudgetReservation.settle_at <= now
    )
    if principal_id is not None:
        q = q.where(BudgetReservation.principal_id == principal_id)
    return list(session.execute(q.order_by(BudgetReservation.settle_at)).scalars())


def reservations_of_day(session: Session, day: str) -> list[BudgetReservation]:
    """Every reservation counted on the UTC day `day` (to rebuild the daily counters)."""
    return list(session.execute(select(BudgetReservation).where(BudgetReservation.day == day)).scalars())


def admissions_since(session: Session, since: datetime) -> dict[int, int]:
    """Jobs admitted per partner since `since` (to rebuild the release window)."""
    q = (
        select(BudgetReservation.principal_id, func.count())
        .where(BudgetReservation.created_at >= since)
        .group_by(BudgetReservation.principal_id)
    )
    return {int(p): int(n) for p, n in session.execute(q).all()}


def reservations_since(session: Session, day: str, principal_id: int | None = None) -> list[BudgetReservation]:
    """Reservations counted on `day` (YYYYMMDD) or later, of one partner or all."""
    query = select(BudgetReservation).where(BudgetReservation.day >= day)
    if principal_id is not None:
        query = query.where(BudgetReservation.principal_id == principal_id)
    return list(session.execute(query.order_by(BudgetReservation.day)).scalars())
