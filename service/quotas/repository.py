"""Every query of the quotas domain: ε spent per (partner, dataset version), and reservations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db import insert_if_missing, utcnow
from service.quotas.models import BudgetReservation, EpsilonSpend

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


def claim_settlement(session: Session, job_id: str, *, ran: bool, rows_used: int | None) -> BudgetReservation | None:
    """Mark the reservation settled, once: the caller that gets it back settles it; every other
    caller (a redelivered task, a concurrent cancel) gets None."""
    done = cast(
        "CursorResult[Any]",
        session.execute(
            update(BudgetReservation)
            .where(BudgetReservation.job_id == job_id, BudgetReservation.settled.is_(False))
            .values(settled=True, ran=ran, rows_used=rows_used, settled_at=utcnow())
            .execution_options(synchronize_session=False)
        ),
    )
    if done.rowcount != 1:
        return None
    return session.execute(
        select(BudgetReservation).where(BudgetReservation.job_id == job_id).execution_options(populate_existing=True)
    ).scalar_one()
