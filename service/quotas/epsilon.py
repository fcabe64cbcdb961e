"""Differential-privacy ε per partner and dataset version, persisted and on the ledger.

A job's ε is reserved at admission, in the transaction that records the job, by one conditional
UPDATE: two concurrent admissions can never both take the last of a budget. Sums are kept in
millionths so they are exact. The spend is returned only for a job that never ran.
"""

from __future__ import annotations

import math

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db import insert_if_missing
from service.ledger import service as ledger
from service.quotas.models import EpsilonSpend
from service.registry.models import DatasetVersion

MICRO = 1_000_000


def to_micro(epsilon: float) -> int:
    return math.ceil(round(epsilon * MICRO, 3))


def spent(session: Session, principal_id: int, dataset_version_id: int) -> float:
    row = session.get(EpsilonSpend, (principal_id, dataset_version_id))
    return row.spent_micro / MICRO if row else 0.0


def spent_by_dataset(session: Session, principal_id: int) -> list[tuple[DatasetVersion, float]]:
    rows = session.execute(
        select(DatasetVersion, EpsilonSpend.spent_micro)
        .join(EpsilonSpend, EpsilonSpend.dataset_version_id == DatasetVersion.id)
        .where(EpsilonSpend.principal_id == principal_id)
        .order_by(DatasetVersion.name, DatasetVersion.version)
    )
    return [(d, micro / MICRO) for d, micro in rows]


def try_spend(
    session: Session,
    *,
    principal_id: int,
    dataset: DatasetVersion,
    epsilon: float,
    budget: float,
    job_id: str,
    actor: str,
) -> bool:
    """Spend epsilon if the budget allows; False (and nothing written) if it does not."""
    want, cap = to_micro(epsilon), to_micro(budget)
    insert_if_missing(session, EpsilonSpend, principal_id=principal_id, dataset_version_id=dataset.id, spent_micro=0)
    done = session.execute(
        update(EpsilonSpend)
        .where(
            EpsilonSpend.principal_id == principal_id,
            EpsilonSpend.dataset_version_id == dataset.id,
            EpsilonSpend.spent_micro + want <= cap,
        )
        .values(spent_micro=EpsilonSpend.spent_micro + want)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        return False
    ledger.append(
        session,
        actor=actor,
        action="privacy.epsilon_spent",
        subject=f"job:{job_id}",
        data={
            "dataset": dataset.ref,
            "epsilon": epsilon,
            "spent": spent(session, principal_id, dataset.id),
            "budget": budget,
        },
    )
    return True


def refund(
    session: Session, *, principal_id: int, dataset: DatasetVersion, epsilon: float, job_id: str, actor: str
) -> None:
    """Give back the ε of a job that never ran."""
    if epsilon <= 0:
        return
    session.execute(
        update(EpsilonSpend)
        .where(EpsilonSpend.principal_id == principal_id, EpsilonSpend.dataset_version_id == dataset.id)
        .values(spent_micro=EpsilonSpend.spent_micro - to_micro(epsilon))
        .execution_options(synchronize_session=False)
    )
    ledger.append(
        session,
        actor=actor,
        action="privacy.epsilon_refunded",
        subject=f"job:{job_id}",
        data={"dataset": dataset.ref, "epsilon": epsilon},
    )
