"""Every budget a job spends, behind two calls: `reserve` at admission and `settle` when it ends.

    reserve: jobs in progress → model rows today → ε on the dataset version → leakage bits today and
             over the dataset's and the model's lifetime → a release slot in the window → model
             rows granted (today's and the model's lifetime). All or nothing: a refusal raises
             (with what fits instead) and leaves nothing reserved.
    settle:  once per job, whoever ends it. A job whose partner code never ran gets everything back
             but its release slot; one whose code may have run keeps all of it (its ε, its bits and
             its model rows: what it used of them is its own choice, so a refund of the rest would be
             a channel). What is given back, and the job's slot among those in progress, moves at
             the job's padded completion time, when its partner sees it end, not before.

What a reservation holds is recorded in `budget_reservations`, so settling needs only the job id,
and a partner's jobs in progress are its reservations not yet settled. The daily counters live in
Redis (shared by API processes and workers) or, embedded, in the database; ε and the lifetime
counters live in the database. The database parts are written in the caller's transaction, and what
went to Redis is given back if that transaction rolls back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.auth.models import Principal
from service.config import PartnerLimits, Settings
from service.db import on_rollback, utcnow
from service.errors import EvalgateError
from service.ledger import service as ledger
from service.policies import service as policies
from service.quotas import errors, leakage, lifetime
from service.quotas import repository as repo
from service.quotas.guards import AdmissionGuards
from service.quotas.models import BudgetReservation
from service.quotas.schemas import (
    BudgetLeft,
    BudgetRead,
    ConcurrencyRead,
    DailyRead,
    EpsilonRead,
    LifetimeRead,
    ReleasesRead,
)
from service.quotas.store import DailyQuota, make_quota, seconds_to_reset, today
from service.registry import repository as registry_repo

log = logging.getLogger(__name__)

MICRO = repo.MICRO


def to_micro(epsilon: float) -> int:
    return math.ceil(round(epsilon * MICRO, 3))  # whole millionths, after taking off float dust


@dataclass(frozen=True)
class Partner:
    """Whom a job's budgets are charged to: its partner, or the operator or researcher who asked for a
    reproduction (service.reproductions)."""

    id: int
    name: str
    role: str = "partner"

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"


@dataclass(frozen=True)
class Plan:
    """What one job may spend, fixed at admission."""

    dataset_id: int
    dataset_ref: str
    epsilon_per_metric: float
    epsilon_total: float
    noised_metrics: tuple[str, ...]
    bits: float  # the most the job's ending can carry
    rows: int  # model rows the job asks for
    model_id: int | None = None
    caps: lifetime.Caps | None = None  # the lifetime caps this job counts against
    # A reproduction (service.reproductions) releases nothing, so it takes no release slot, and it
    # must get exactly the original's model rows or not run (a smaller budget would not reproduce).
    releases: bool = True
    exact_rows: bool = False


class Budgets:
    """The one owner of every budget, built once per process (API, worker)."""

    def __init__(
        self,
        settings: Settings,
        rows: DailyQuota,
        bits: DailyQuota,
        guards: AdmissionGuards,
        sessions: sessionmaker[Session] | None = None,
    ):
        self.settings, self.rows, self.bits, self.guards = settings, rows, bits, guards
        self.sessions = sessions  # for reading a partner's limits where the caller has no session

    @classmethod
    def build(cls, settings: Settings, sessions: sessionmaker[Session]) -> Budgets:
        guards = AdmissionGuards(
            redis_url=settings.redis_url, namespace=settings.queue, window_s=settings.release_window_s
        )
        return cls(
            settings,
            make_quota(settings, sessions, "rows"),
            make_quota(settings, sessions, "millibits"),
            guards,
            sessions,
        )

    def limits(self, partner: str, session: Session | None = None) -> PartnerLimits:
        """A partner's limits now, as an operator last set them (service.policies), read from the
        database at every call: a change applies to the next admission on every process."""
        if session is not None:
            return policies.partner_limits(session, self.settings, partner)
        if self.sessions is None:
            return self.settings.limits_for(partner)
        with self.sessions() as own:
            return policies.partner_limits(own, self.settings, partner)

    def epsilon_budget(self, session: Session, limits: PartnerLimits, dataset_id: int) -> float:
        """The partner's ε budget on one dataset version: its own or the dataset's, the smaller."""
        return policies.epsilon_budget(limits, policies.dataset_rules(session, self.settings, dataset_id))

    @contextmanager
    def admission(self, partner_id: int) -> Iterator[None]:
        """One admission at a time per partner, across API processes: hold it until the admission
        has committed, so jobs in progress and the release window are exact."""
        with self.guards.partner_lock(partner_id):
            yield

    # -- admission ---------------------------------------------------------------------------------

    def ensure_counters(self, session: Session) -> bool:
        """Redis keeps the daily counters and the release window, and may lose them (a restart
        without persistence, a flush). The database keeps every reservation: put the counters back
        from it before they are used. Returns whether anything was restored."""
        if self.rows.intact() and self.bits.intact():
            return False
        with self.guards.rebuild_lock():
            if self.rows.intact() and self.bits.intact():
                return False  # another process did it meanwhile
            day = today()
            rows: dict[tuple[int, str], int] = {}
            bits: dict[tuple[int, str], int] = {}
            open_rows, open_bits = [], []
            for r in repo.reservations_of_day(session, day):
                key = (r.principal_id, r.day)
                kept = (not r.settled) or bool(r.ran)  # what the counter holds for it: all, or nothing
                rows[key] = rows.get(key, 0) + (r.rows if kept else 0)
                bits[key] = bits.get(key, 0) + (r.millibits if kept else 0)
                if not r.settled:
                    open_rows.append((r.job_id, r.principal_id, r.day, r.rows))
                    open_bits.append((r.job_id, r.principal_id, r.day, r.millibits))
            since = utcnow() - timedelta(seconds=self.settings.release_window_s)
            for principal_id, admitted in repo.admissions_since(session, since).items():
                principal = session.get(Principal, principal_id)
                name = principal.name if principal is not None else ""
                self.guards.restore_releases(principal_id, admitted, self.limits(name, session).releases_per_window)
            self.rows.restore(rows, open_rows)
            self.bits.restore(bits, open_bits)
        log.warning("restored the budget counters of %s from %d reservations", day, len(open_rows) + len(rows))
        return True

    def reserve(self, session: Session, partner: Partner, job_id: str, plan: Plan) -> BudgetReservation:
        """Reserve everything the job may spend, in the caller's transaction, or raise a refusal."""
        limits = self.limits(partner.name, session)
        self.apply_due(session, partner.id)
        active = repo.open_reservations(session, partner.id)
        if active >= limits.max_concurrent_jobs:
            raise _too_many_jobs(active)
        if self.rows.used(partner.id, session) >= limits.rows_per_day:
            raise _rows_spent()
        epsilon_micro = to_micro(plan.epsilon_total)
        if epsilon_micro > 0:
            budget = self.epsilon_budget(session, limits, plan.dataset_id)
            if not repo.try_spend_epsilon(session, partner.id, plan.dataset_id, epsilon_micro, to_micro(budget)):
                self._refuse_epsilon(session, partner, plan, limits)
            ledger.append(
                session,
                actor=partner.actor,
                action="privacy.epsilon_spent",
                subject=f"job:{job_id}",
                data={
                    "dataset": plan.dataset_ref,
                    "epsilon": plan.epsilon_total,
                    "spent": repo.epsilon_spent_micro(session, partner.id, plan.dataset_id) / MICRO,
                    "budget": budget,
                },
            )
        millibits = self._reserve_bits(session, partner, job_id, plan, limits)
        lifetime_parts = self._reserve_lifetime_bits(session, plan, millibits)
        if plan.releases:
            self._take_release_slot(partner, limits)
        ledger.append(
            session,
            actor=partner.actor,
            action="leakage.bits_reserved",
            subject=f"job:{job_id}",
            data={"bits": round(plan.bits, 3), "bits_per_day": limits.bits_per_day},
        )
        rows, row_parts = self._reserve_rows(session, partner, job_id, plan, limits)
        ledger.append(
            session,
            actor=partner.actor,
            action="quota.rows_reserved",
            subject=f"job:{job_id}",
            data={"wanted": plan.rows, "granted": rows, "day": today(), "rows_per_day": limits.rows_per_day},
        )
        reservation = BudgetReservation(
            job_id=job_id,
            principal_id=partner.id,
            dataset_version_id=plan.dataset_id,
            model_version_id=plan.model_id,
            epsilon_micro=epsilon_micro,
            millibits=millibits,
            rows=rows,
            day=today(),
            lifetime_parts=lifetime_parts + row_parts,
        )
        session.add(reservation)
        session.flush()
        return reservation

    def _reserve_bits(self, session: Session, partner: Partner, job_id: str, plan: Plan, limits: PartnerLimits) -> int:
        want = leakage.to_millibits(plan.bits)
        cap = leakage.to_millibits(limits.bits_per_day)
        if self.bits.reserve(partner.id, job_id, want, cap, partial=False, session=session) < want:
            raise _bits_spent(plan, max(0.0, limits.bits_per_day - self.bits.used(partner.id, session) / 1000), limits)
        on_rollback(session, lambda: self.bits.settle(job_id, 0))
        return want

    def _reserve_lifetime_bits(self, session: Session, plan: Plan, millibits: int) -> list[list[Any]]:
        """Count the job's bits against each lifetime cap; the parts counted, to give back if it never runs."""
        parts: list[list[Any]] = []
        for cap in plan.caps.bits if plan.caps else ():
            left = repo.lifetime_locked_left(session, cap.scope, cap.asset_id, cap.principal_id, cap.resource, cap.cap)
            if left < millibits:
                raise _lifetime_bits_spent(cap, millibits, left)
            repo.lifetime_add(session, cap.scope, cap.asset_id, cap.principal_id, cap.resource, millibits)
            parts.append([cap.scope, cap.asset_id, cap.principal_id, cap.resource, millibits])
        return parts

    def _reserve_rows(
        self, session: Session, partner: Partner, job_id: str, plan: Plan, limits: PartnerLimits
    ) -> tuple[int, list[list[Any]]]:
        """Model rows: the job gets what it asked for, or what is left today and of the model's
        lifetime rows if that is less (none left of either: refused)."""
        want = plan.rows
        caps = plan.caps.rows if plan.caps else ()
        for cap in caps:
            left = repo.lifetime_locked_left(session, cap.scope, cap.asset_id, cap.principal_id, cap.resource, cap.cap)
            if left <= 0:
                raise _lifetime_rows_spent(cap)
            if plan.exact_rows and left < want:
                raise errors.LifetimeRowsExhausted(
                    f"{max(0, left)} of the {cap.cap} model rows you may have predicted by {cap.label} over its "
                    f"lifetime are left; this needs {want}",
                    alternatives=[f"ask the operator for more lifetime rows for {cap.label}"],
                )
            want = min(want, left)
        partial = not plan.exact_rows
        rows = self.rows.reserve(partner.id, job_id, want, limits.rows_per_day, partial=partial, session=session)
        on_rollback(session, lambda: self.rows.settle(job_id, 0))
        if plan.exact_rows and rows < want:  # all or nothing: the counter took nothing
            raise errors.DailyQueryBudgetExhausted(
                f"this needs {want} model rows; fewer of today's {limits.rows_per_day} are left",
                alternatives=[f"the budget resets at 00:00 UTC, in {seconds_to_reset()} s"],
                retry_after_s=seconds_to_reset(),
            )
        parts = []
        for cap in caps:
            repo.lifetime_add(session, cap.scope, cap.asset_id, cap.principal_id, cap.resource, rows)
            parts.append([cap.scope, cap.asset_id, cap.principal_id, cap.resource, rows])
        return rows, parts

    def _take_release_slot(self, partner: Partner, limits: PartnerLimits) -> None:
        """The moving window cannot take one hit back, so an admission that then fails to commit
        costs the partner one slot for one window: the safe direction."""
        limit = limits.releases_per_window
        if not self.guards.take_release(partner.id, limit):
            raise self._window_full(partner, limit)

    def _window_full(self, partner: Partner, limit: int) -> errors.ReleaseRateExceeded:
        window = self.guards.release_window(partner.id, limit)
        return errors.ReleaseRateExceeded(
            f"at most {limit} releases per {self.settings.release_window_s} s",
            retry_after_s=window.reset_in_s,
            alternatives=[f"retry in {window.reset_in_s} s"],
        )

    def _refuse_epsilon(self, session: Session, partner: Partner, plan: Plan, limits: PartnerLimits) -> None:
        raise self._epsilon_spent(session, partner, plan, limits)

    def _epsilon_spent(
        self, session: Session, partner: Partner, plan: Plan, limits: PartnerLimits
    ) -> errors.PrivacyBudgetExhausted:
        budget = self.epsilon_budget(session, limits, plan.dataset_id)
        spent = repo.epsilon_spent_by_dataset(session, partner.id)
        left = max(0.0, budget - spent.get(plan.dataset_id, 0) / MICRO)
        per_metric, k = plan.epsilon_per_metric, len(plan.noised_metrics)
        alternatives = []
        if left >= per_metric:
            alternatives.append(
                f"request at most {int(left // per_metric)} of the noised metrics "
                f"({', '.join(plan.noised_metrics)}): each costs epsilon {per_metric}"
            )
        if left > 0:
            alternatives.append(f"ask for epsilon <= {left / k:.6f} per metric (noisier values)")
        alternatives.append(f"ask the operator for a larger epsilon budget for {plan.dataset_ref}")
        others = [
            d.ref
            for d in registry_repo.datasets(session, exclude_id=plan.dataset_id)
            for rules in [policies.dataset_rules(session, self.settings, d.id)]
            if d.rows >= rules.min_dataset_rows
            and policies.epsilon_budget(limits, rules) - spent.get(d.id, 0) / MICRO >= plan.epsilon_total
        ][:10]
        if others:
            alternatives.append(f"use another dataset version with enough budget left: {', '.join(others)}")
        return errors.PrivacyBudgetExhausted(
            f"this job needs epsilon {plan.epsilon_total} on {plan.dataset_ref}; {left:.6f} of your {budget} is left",
            alternatives=alternatives,
        )

    def preview(self, session: Session, partner: Partner, plan: Plan) -> Preview:
        """What `reserve` would do now, in the same order, without reserving, counting or recording
        anything (a dry run): the first refusal it would raise, and what would be granted and left."""
        limits = self.limits(partner.name, session)
        self.apply_due(session, partner.id)  # due settlements, as every read of the budgets applies them
        active = repo.open_reservations(session, partner.id)
        rows_used = self.rows.used(partner.id, session)
        bits_left = max(0.0, limits.bits_per_day - self.bits.used(partner.id, session) / 1000)
        eps_budget = self.epsilon_budget(session, limits, plan.dataset_id)
        eps_left = max(
            0.0, eps_budget - repo.epsilon_spent_by_dataset(session, partner.id).get(plan.dataset_id, 0) / MICRO
        )
        window = self.guards.release_window(partner.id, limits.releases_per_window)
        millibits = leakage.to_millibits(plan.bits)
        lifetime_bits = [
            (cap, cap.cap - repo.lifetime_used(session, cap.scope, cap.asset_id, cap.principal_id, cap.resource))
            for cap in (plan.caps.bits if plan.caps else ())
        ]
        lifetime_rows = [
            (cap, cap.cap - repo.lifetime_used(session, cap.scope, cap.asset_id, cap.principal_id, cap.resource))
            for cap in (plan.caps.rows if plan.caps else ())
        ]
        granted = min([plan.rows, max(0, limits.rows_per_day - rows_used)] + [left for _, left in lifetime_rows])
        refusal: EvalgateError | None = None
        if active >= limits.max_concurrent_jobs:
            refusal = _too_many_jobs(active)
        elif rows_used >= limits.rows_per_day:
            refusal = _rows_spent()
        elif to_micro(plan.epsilon_total) > 0 and to_micro(plan.epsilon_total) > to_micro(eps_left):
            refusal = self._epsilon_spent(session, partner, plan, limits)
        elif millibits > leakage.to_millibits(bits_left):
            refusal = _bits_spent(plan, bits_left, limits)
        elif any(left < millibits for _, left in lifetime_bits):
            refusal = next(_lifetime_bits_spent(c, millibits, left) for c, left in lifetime_bits if left < millibits)
        elif plan.releases and (window.limit <= 0 or window.remaining < 1):
            refusal = self._window_full(partner, limits.releases_per_window)
        elif any(left <= 0 for _, left in lifetime_rows):
            refusal = next(_lifetime_rows_spent(c) for c, left in lifetime_rows if left <= 0)
        spend = refusal is None
        return Preview(
            refusal=refusal,
            rows_granted=granted if spend else 0,
            left=BudgetLeft(
                epsilon=round(eps_left - (plan.epsilon_total if spend else 0), 6),
                leakage_bits_today=round(bits_left - (plan.bits if spend else 0), 3),
                model_rows_today=max(0, limits.rows_per_day - rows_used - (granted if spend else 0)),
                releases_in_window=max(0, window.remaining - (1 if spend and plan.releases else 0)),
                jobs_in_progress=active + (1 if spend else 0),
                jobs_in_progress_limit=limits.max_concurrent_jobs,
            ),
        )

    def jobs_in_progress(self, session: Session, partner_id: int) -> int:
        """The partner's real jobs in progress as it sees them: admitted, and not yet past their padded
        completion time (due settlements applied first)."""
        self.apply_due(session, partner_id)
        return int(repo.open_reservations(session, partner_id))

    def rows_granted(self, session: Session, job_id: str) -> int:
        """The model rows the job may use (0 for a job that reserved none)."""
        r = repo.reservation(session, job_id)
        return r.rows if r is not None else 0

    # -- the end of a job ----------------------------------------------------------------------------

    def settle(
        self,
        session: Session,
        job_id: str,
        *,
        ran: bool,
        rows_used: int | None,
        actor: str,
        at: datetime | None = None,
    ) -> None:
        """Record, once, how the job ended, and apply what that gives back at `at` (its padded
        completion time; now if None or past). `ran`: its partner code may have run (and seen data),
        so everything stays spent. `rows_used` is kept for operators only."""
        now = utcnow()
        r = repo.end_reservation(session, job_id, ran=ran, rows_used=rows_used, settle_at=max(at or now, now))
        if r is None:
            return  # ended already, or never reserved
        self.apply_due(session, r.principal_id, actor=actor)

    def apply_due(self, session: Session, principal_id: int | None, *, actor: str = "quotas") -> int:
        """Apply every ended reservation (of one partner, or all) whose time has come. Called where a
        partner could observe the effect (its admissions, its budget), and by the worker. Counters
        Redis lost are put back first."""
        self.ensure_counters(session)
        applied = 0
        for job_id in repo.due(session, principal_id, utcnow()):
            r = repo.claim_settlement(session, job_id)
            if r is not None:
                self._apply(session, r, actor)
                applied += 1
        return applied

    def _apply(self, session: Session, r: BudgetReservation, actor: str) -> None:
        ran = bool(r.ran)
        job_id = r.job_id
        carried = r.millibits if ran else 0
        refund = self.bits.settle(job_id, carried, session=session)
        ledger.append(
            session,
            actor=actor,
            action="leakage.bits_settled",
            subject=f"job:{job_id}",
            data={"bits": carried / 1000, "refunded_bits": (refund or 0) / 1000},
        )
        back = self.rows.settle(job_id, r.rows if ran else 0, session=session)
        ledger.append(
            session,
            actor=actor,
            action="quota.rows_settled",
            subject=f"job:{job_id}",
            data={"used": r.rows_used, "charged": r.rows if ran else 0, "refunded": back or 0},
        )
        if ran:
            return
        for scope, asset_id, principal_id, resource, amount in r.lifetime_parts or []:
            repo.lifetime_add(session, scope, asset_id, principal_id, resource, -amount)
        if r.epsilon_micro > 0:
            repo.give_back_epsilon(session, r.principal_id, r.dataset_version_id, r.epsilon_micro)
            dataset = registry_repo.datasets_by_id(session, [r.dataset_version_id])[r.dataset_version_id]
            ledger.append(
                session,
                actor=actor,
                action="privacy.epsilon_refunded",
                subject=f"job:{job_id}",
                data={"dataset": dataset.ref, "epsilon": r.epsilon_micro / MICRO},
            )

    # -- reading -------------------------------------------------------------------------------------------

    def read(self, session: Session, partner: Partner) -> BudgetRead:
        """What the partner has used and has left, of every budget."""
        limits = self.limits(partner.name, session)
        self.apply_due(session, partner.id)
        window = self.guards.release_window(partner.id, limits.releases_per_window)
        spent = repo.epsilon_spent_by_dataset(session, partner.id)
        datasets = registry_repo.datasets_by_id(session, list(spent))
        eps = limits.epsilon_budget
        return BudgetRead(
            partner=partner.name,
            leakage_bits=_daily(self.bits.used(partner.id, session) / 1000, limits.bits_per_day),
            model_rows=_daily(self.rows.used(partner.id, session), limits.rows_per_day),
            epsilon=[
                EpsilonRead(
                    dataset=d.ref,
                    spent=spent[d.id] / MICRO,
                    budget=budget,
                    left=round(max(0.0, budget - spent[d.id] / MICRO), 6),
                )
                for d in sorted(datasets.values(), key=lambda d: (d.name, d.version))
                for budget in [self.epsilon_budget(session, limits, d.id)]
            ],
            epsilon_budget_per_dataset=eps,
            epsilon_per_metric_default=min(self.settings.dp_epsilon_per_metric, limits.max_epsilon_per_metric),
            epsilon_per_metric_max=limits.max_epsilon_per_metric,
            releases=ReleasesRead(
                limit=limits.releases_per_window,
                left=window.remaining,
                window_s=self.settings.release_window_s,
                resets_in_s=window.reset_in_s,
            ),
            concurrent_jobs=ConcurrencyRead(
                active=repo.open_reservations(session, partner.id), limit=limits.max_concurrent_jobs
            ),
            lifetime=self._lifetime(session, partner),
        )

    def _lifetime(self, session: Session, partner: Partner) -> list[LifetimeRead]:
        used = repo.lifetime_used_by(session, partner.id)
        datasets = registry_repo.datasets_by_id(session, [a for (scope, a, _) in used if scope == lifetime.DATASET])
        models = registry_repo.models_by_id(session, [a for (scope, a, _) in used if scope == lifetime.MODEL])
        out = []
        for (scope, asset_id, resource), amount in sorted(used.items()):
            if scope == lifetime.DATASET and asset_id in datasets:
                d = datasets[asset_id]
                cap, how = lifetime.dataset_cap_bits(self.settings, d), lifetime.describe_dataset_cap(self.settings, d)
                asset = f"dataset:{d.ref}"
            elif scope == lifetime.MODEL and asset_id in models:
                m = models[asset_id]
                if resource == lifetime.ROWS:
                    cap, how = (
                        lifetime.model_cap_rows(self.settings, m),
                        lifetime.describe_model_rows_cap(self.settings, m),
                    )
                else:
                    cap, how = lifetime.model_cap_bits(self.settings, m), lifetime.describe_model_cap(self.settings, m)
                asset = f"model:{m.ref}"
            else:
                continue
            if cap is None:
                continue
            value = amount / 1000 if resource == lifetime.BITS else float(amount)
            out.append(
                LifetimeRead(
                    asset=asset,
                    resource="bits" if resource == lifetime.BITS else "rows",
                    used=round(value, 3),
                    limit=round(float(cap), 3),
                    left=round(max(0.0, float(cap) - value), 3),
                    derivation=how,
                )
            )
        return out


def _daily(used: float, limit: float) -> DailyRead:
    return DailyRead(
        used=round(used, 3), limit=limit, left=round(max(0.0, limit - used), 3), resets_in_s=seconds_to_reset()
    )


def charge_epsilon(
    session: Session,
    settings: Settings,
    principal: Partner,
    dataset_id: int,
    dataset_ref: str,
    epsilon: float,
    subject: str,
) -> None:
    """Spend ε on a dataset version outside any job (a synthetic twin's statistics, service.twins),
    from the principal's own budget on it (the dataset's policy's), in the caller's transaction, with
    its ledger event. Raises PrivacyBudgetExhausted, leaving nothing spent."""
    budget = policies.dataset_rules(session, settings, dataset_id).epsilon_budget
    if not repo.try_spend_epsilon(session, principal.id, dataset_id, to_micro(epsilon), to_micro(budget)):
        left = max(0.0, budget - repo.epsilon_spent_micro(session, principal.id, dataset_id) / MICRO)
        raise errors.PrivacyBudgetExhausted(
            f"this needs epsilon {epsilon} on {dataset_ref}; {left:.6f} of your {budget} is left",
            alternatives=[f"ask for a larger epsilon budget for {dataset_ref}"],
        )
    ledger.append(
        session,
        actor=principal.actor,
        action="privacy.epsilon_spent",
        subject=subject,
        data={
            "dataset": dataset_ref,
            "epsilon": epsilon,
            "spent": repo.epsilon_spent_micro(session, principal.id, dataset_id) / MICRO,
            "budget": budget,
        },
    )


@dataclass(frozen=True)
class Preview:
    refusal: EvalgateError | None  # the refusal `reserve` would raise now; None: it would reserve
    rows_granted: int
    left: BudgetLeft


def _too_many_jobs(active: int) -> errors.TooManyConcurrentJobs:
    return errors.TooManyConcurrentJobs(
        f"you have {active} jobs in progress, the most allowed",
        alternatives=["wait for one to finish, or cancel one"],
        retry_after_s=5,
    )


def _rows_spent() -> errors.DailyQueryBudgetExhausted:
    return errors.DailyQueryBudgetExhausted(
        "today's model query budget is spent",
        alternatives=[f"the budget resets at 00:00 UTC, in {seconds_to_reset()} s"],
        retry_after_s=seconds_to_reset(),
    )


def _bits_spent(plan: Plan, left: float, limits: PartnerLimits) -> errors.LeakageBudgetExhausted:
    return errors.LeakageBudgetExhausted(
        f"this job can carry {plan.bits:.1f} bits; {left:.1f} of your {limits.bits_per_day:g} bits for today are left",
        retry_after_s=seconds_to_reset(),
        alternatives=["request fewer metrics", f"the budget resets at 00:00 UTC, in {seconds_to_reset()} s"],
    )


def _lifetime_bits_spent(cap: lifetime.Cap, millibits: int, left: int) -> errors.LifetimeLeakageExhausted:
    if cap.principal_id == lifetime.EVERY_PARTNER:
        # What is left of a pooled cap moves with other partners' jobs: it is never shown, only that
        # this job does not fit (which a refusal cannot help saying).
        return errors.LifetimeLeakageExhausted(
            f"this job can carry {millibits / 1000:.1f} bits; fewer are left of the "
            f"{cap.cap / 1000:.0f} bits {cap.label} may give over its lifetime",
            alternatives=["request fewer metrics", f"ask the operator for a larger lifetime budget for {cap.label}"],
        )
    return errors.LifetimeLeakageExhausted(
        f"this job can carry {millibits / 1000:.1f} bits; {max(0, left) / 1000:.1f} of the "
        f"{cap.cap / 1000:.0f} bits {cap.label} may give over its lifetime are left",
        alternatives=["request fewer metrics", f"ask the operator for a larger lifetime budget for {cap.label}"],
    )


def _lifetime_rows_spent(cap: lifetime.Cap) -> errors.LifetimeRowsExhausted:
    return errors.LifetimeRowsExhausted(
        f"the {cap.cap} model rows you may have predicted by {cap.label} over its lifetime are spent",
        alternatives=[f"ask the operator for more lifetime rows for {cap.label}", "use another model version"],
    )
