"""Leakage in bits, per partner per UTC day.

A job reserves, at admission, the most its ending can carry: which outcome it had, which padded
completion time, and each metric's value or reason for being withheld (see release.gate). A job
that ran is charged all of it, whatever it reported: what it reports is its own choice, so the
channel is as wide as the choices. A job that never ran carries nothing; its bits and ε go back.
"""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from service.config import Settings
from service.jobs.models import Job
from service.jobs.states import ERROR_CLASSES
from service.ledger import service as ledger
from service.quotas import epsilon
from service.quotas.store import DailyQuota
from service.release import gate, timing


def to_millibits(bits: float) -> int:
    return math.ceil(round(bits * 1000, 6))


def outcome_bits(settings: Settings) -> float:
    """Released or one of the error classes, and one of the padded completion times."""
    return gate.outcome_bits(
        len(ERROR_CLASSES) + 1, timing.distinct_durations(settings.timing_buckets_s, settings.longest_job_s)
    )


def job_bits(settings: Settings, metric_bits: float) -> float:
    return metric_bits + outcome_bits(settings)


def settle(session: Session, bits: DailyQuota, job: Job, actor: str) -> None:
    """Charge an ended job. Idempotent: the second call finds the grant settled."""
    ran = job.started_at is not None
    carried = job.spec.get("leakage_bits", 0.0) if ran else 0.0
    refund = bits.settle(job.id, to_millibits(carried), session=session)
    if refund is None:
        return
    ledger.append(
        session,
        actor=actor,
        action="leakage.bits_settled",
        subject=f"job:{job.id}",
        data={"bits": round(carried, 3), "refunded_bits": refund / 1000},
    )
    if not ran:
        epsilon.refund(
            session,
            principal_id=job.principal_id,
            dataset=job.dataset,
            epsilon=job.spec.get("privacy", {}).get("epsilon_total", 0.0),
            job_id=job.id,
            actor=actor,
        )
