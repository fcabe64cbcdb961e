"""Leakage in bits, per partner per UTC day.

A job reserves, at admission, the most its ending can carry: which outcome it had, which padded
completion time, and the bits of each released value (see release.gate). When it ends it is charged
what it did carry (a withheld metric carries one bit) and the rest goes back. A job that never ran
carries nothing, and its ε goes back too.
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
from service.release.models import Result


def to_millibits(bits: float) -> int:
    return math.ceil(round(bits * 1000, 6))


def outcome_bits(settings: Settings) -> float:
    """Released or one of the error classes, and one of the padded completion times."""
    return gate.outcome_bits(len(ERROR_CLASSES) + 1,
                             timing.distinct_durations(settings.timing_buckets_s, settings.longest_job_s))


def settle(session: Session, bits: DailyQuota, settings: Settings, job: Job, result: Result | None,
           actor: str) -> None:
    """Charge an ended job what it carried. Idempotent: the second call finds the grant settled."""
    ran = job.started_at is not None
    carried = (outcome_bits(settings) + (result.disclosure.get("bits", 0.0) if result else 0.0)) if ran else 0.0
    refund = bits.settle(job.id, to_millibits(carried), session=session)
    if refund is None:
        return
    ledger.append(session, actor=actor, action="leakage.bits_settled", subject=f"job:{job.id}",
                  data={"bits": round(carried, 3), "refunded_bits": refund / 1000})
    if not ran:
        epsilon.refund(session, principal_id=job.principal_id, dataset=job.dataset,
                       epsilon=job.spec.get("privacy", {}).get("epsilon_total", 0.0), job_id=job.id, actor=actor)
