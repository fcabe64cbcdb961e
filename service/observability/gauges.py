"""Gauges read from the database when Prometheus scrapes the API: the queue and each partner's budget
use. The database is the one place that knows them for every process at once, so they are right
however many API processes and workers run, and no process has to keep them.

Per-partner values are served only by the API's operator-only `GET /metrics`, never by a worker's
unauthenticated port. They are the true values (what operators need), not the padded ones a partner
is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, not_, select
from sqlalchemy.orm import Session

from service.auth.models import Principal
from service.auth.roles import Role
from service.config import PartnerLimits
from service.jobs.models import Job
from service.jobs.states import TERMINAL, JobState
from service.quotas.models import BudgetReservation, EpsilonSpend
from service.quotas.store import today

MICRO = 1_000_000


class DatabaseGauges(Collector):
    """Collected once per scrape, on the request's session (read only)."""

    def __init__(self, session: Session, limits: Callable[[str], PartnerLimits], now: datetime | None = None):
        self.session, self.limits, self.now = session, limits, now

    def collect(self) -> Iterator[Metric]:
        now = self.now or datetime.now(UTC)
        yield from self._jobs(now)
        yield from self._partners(now)

    def _jobs(self, now: datetime) -> Iterator[Metric]:
        s = self.session
        counts = dict(
            s.execute(select(Job.state, func.count()).where(Job.state.not_in(list(TERMINAL))).group_by(Job.state)).all()
        )
        by_state = GaugeMetricFamily("evalgate_jobs", "Jobs not yet ended, by state", labels=["state"])
        for state in JobState:
            if state not in TERMINAL:
                by_state.add_metric([state.value], counts.get(state, 0))
        yield by_state
        yield GaugeMetricFamily(
            "evalgate_queue_depth", "Jobs queued for a worker", value=counts.get(JobState.QUEUED, 0)
        )
        oldest = s.execute(select(func.min(Job.created_at)).where(Job.state == JobState.QUEUED)).scalar_one_or_none()
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        yield GaugeMetricFamily(
            "evalgate_queue_oldest_age_seconds",
            "Age of the oldest queued job, since its admission (0 when none waits)",
            value=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
        )

    def _partners(self, now: datetime) -> Iterator[Metric]:
        s = self.session
        names = dict(s.execute(select(Principal.id, Principal.name).where(Principal.role == Role.PARTNER)).all())
        open_jobs = dict(
            s.execute(
                select(BudgetReservation.principal_id, func.count())
                .where(BudgetReservation.settled.is_(False))
                .group_by(BudgetReservation.principal_id)
            ).all()
        )
        # Today's model rows and bits: what each of today's reservations holds, less what a job whose
        # code never ran gets back.
        charged = not_(and_(BudgetReservation.ended.is_(True), BudgetReservation.ran.is_(False)))
        daily = {
            pid: (rows, millibits)
            for pid, rows, millibits in s.execute(
                select(
                    BudgetReservation.principal_id,
                    func.sum(case((charged, BudgetReservation.rows), else_=0)),
                    func.sum(case((charged, BudgetReservation.millibits), else_=0)),
                )
                .where(BudgetReservation.day == today(now))
                .group_by(BudgetReservation.principal_id)
            ).all()
        }
        epsilon = dict(
            s.execute(
                select(EpsilonSpend.principal_id, func.max(EpsilonSpend.spent_micro)).group_by(
                    EpsilonSpend.principal_id
                )
            ).all()
        )
        used = GaugeMetricFamily(
            "evalgate_partner_budget_used",
            "A partner's use of each budget: model rows and bits today (UTC), ε on its most used dataset "
            "version, jobs in progress",
            labels=["partner", "resource"],
        )
        limit = GaugeMetricFamily(
            "evalgate_partner_budget_limit",
            "The limit of each budget in evalgate_partner_budget_used",
            labels=["partner", "resource"],
        )
        for pid, name in sorted(names.items(), key=lambda kv: kv[1]):
            rows, millibits = daily.get(pid, (0, 0))
            limits = self.limits(name)
            for resource, value, most in (
                ("model_rows_today", float(rows or 0), float(limits.rows_per_day)),
                ("bits_today", float(millibits or 0) / 1000, float(limits.bits_per_day)),
                ("epsilon_dataset_max", epsilon.get(pid, 0) / MICRO, float(limits.epsilon_budget)),
                ("jobs_in_progress", float(open_jobs.get(pid, 0)), float(limits.max_concurrent_jobs)),
            ):
                used.add_metric([name, resource], value)
                limit.add_metric([name, resource], most)
        yield used
        yield limit
