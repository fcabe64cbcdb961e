"""What a partner has used and has left, from every store that counts it."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.jobs.models import Job
from service.jobs.states import TERMINAL
from service.quotas import epsilon
from service.quotas.guards import AdmissionGuards
from service.quotas.schemas import BudgetRead, ConcurrencyRead, DailyRead, EpsilonRead, ReleasesRead
from service.quotas.store import DailyQuota, seconds_to_reset


def active_jobs(session: Session, principal_id: int) -> int:
    """Jobs admitted and not yet ended (awaiting approval included: each holds reservations)."""
    return session.execute(
        select(func.count()).select_from(Job).where(Job.principal_id == principal_id, Job.state.not_in(TERMINAL))
    ).scalar_one()


def _daily(used: float, limit: float) -> DailyRead:
    return DailyRead(
        used=round(used, 3), limit=limit, left=round(max(0.0, limit - used), 3), resets_in_s=seconds_to_reset()
    )


def budget(
    session: Session,
    settings: Settings,
    principal_id: int,
    name: str,
    *,
    rows: DailyQuota,
    bits: DailyQuota,
    guards: AdmissionGuards,
) -> BudgetRead:
    eps_budget = settings.partner_limit(name, "epsilon_budget")
    release_limit = settings.partner_limit(name, "releases_per_window")
    window = guards.release_window(principal_id, release_limit)
    active = active_jobs(session, principal_id)
    return BudgetRead(
        partner=name,
        leakage_bits=_daily(bits.used(principal_id) / 1000, settings.partner_limit(name, "bits_per_day")),
        model_rows=_daily(rows.used(principal_id), settings.partner_limit(name, "rows_per_day")),
        epsilon=[
            EpsilonRead(dataset=d.ref, spent=spent, budget=eps_budget, left=round(max(0.0, eps_budget - spent), 6))
            for d, spent in epsilon.spent_by_dataset(session, principal_id)
        ],
        epsilon_budget_per_dataset=eps_budget,
        epsilon_per_metric_default=min(
            settings.dp_epsilon_per_metric, settings.partner_limit(name, "max_epsilon_per_metric")
        ),
        epsilon_per_metric_max=settings.partner_limit(name, "max_epsilon_per_metric"),
        releases=ReleasesRead(
            limit=release_limit,
            left=window.remaining,
            window_s=settings.release_window_s,
            resets_in_s=window.reset_in_s,
        ),
        concurrent_jobs=ConcurrencyRead(active=active, limit=settings.partner_limit(name, "max_concurrent_jobs")),
    )
