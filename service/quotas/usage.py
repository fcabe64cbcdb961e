"""What partners used, per UTC day, from the reservations (operators: `evalgate usage`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from service.auth.models import Principal
from service.db import utcnow
from service.quotas import repository as repo


@dataclass
class DayUsage:
    partner: str
    day: str  # YYYYMMDD, UTC
    jobs: int = 0  # admitted that day
    in_progress: int = 0  # of those, not yet settled
    rows: int = 0  # model rows charged (reserved, less what was given back)
    bits: float = 0.0  # leakage bits charged
    epsilon: float = 0.0  # ε charged, over every dataset version


def daily(session: Session, days: int, partner_id: int | None = None) -> list[DayUsage]:
    """Each partner's use per day over the last `days` days (today included), busiest partner first
    within a day; a job given everything back (its code never ran) counts as admitted only."""
    since = (utcnow() - timedelta(days=max(1, days) - 1)).strftime("%Y%m%d")
    found: dict[tuple[int, str], DayUsage] = {}
    names: dict[int, str] = {}
    for r in repo.reservations_since(session, since, partner_id):
        if r.principal_id not in names:
            principal = session.get(Principal, r.principal_id)
            names[r.principal_id] = principal.name if principal is not None else str(r.principal_id)
        u = found.setdefault((r.principal_id, r.day), DayUsage(names[r.principal_id], r.day))
        u.jobs += 1
        u.in_progress += 0 if r.settled else 1
        kept = not r.settled or bool(r.ran)
        if kept:
            u.rows += r.rows
            u.bits += r.millibits / 1000
            u.epsilon += r.epsilon_micro / repo.MICRO
    return sorted(found.values(), key=lambda u: (u.day, -u.rows, u.partner))
