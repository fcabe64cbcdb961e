"""Sanctions: a partner whose jobs trip hard rules too often in one UTC day is suspended.

Trips (`Rule`): a job's output rejected by the release gate, a job's code querying the model past its
budget, a job's code sending the model's sidecar frames or operations the SDK never sends (all three
recorded when the job ends, dated at its padded time: jobs.service.end), and a
submission refused because one of the partner's budgets ran out (recorded with the refusal:
jobs.admission.record_refusal). Past the partner's `hard_rule_trips_per_day` (a live limit,
service.policies; default EVALGATE_HARD_RULE_TRIPS_PER_DAY) the partner is suspended: every new
submission is refused 403 `partner_suspended` with the reason, until an operator lifts it with a
reason. Trips before a lift no longer count.

A trip counts from when its partner can see it, never earlier: a job's ending from its padded time,
so a suspension cannot tell a partner sooner than `JobRead` would how its job ended. The suspension
is therefore made when it is first looked at after the threshold passed (the next submission, the
operators' read), and is on the audit log (`partner.suspended`, `partner.suspension_lifted`) and, as
a commitment to that record, on the transparency log.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from service.auth import repository as auth_repo
from service.auth.roles import Role
from service.canonical import canonical_json
from service.config import Settings
from service.db import utcnow
from service.ledger import service as ledger
from service.policies import errors as policy_errors
from service.policies import service as policies
from service.quotas import errors as quota_errors
from service.release.outcomes import ErrorClass
from service.sanctions import errors
from service.sanctions import repository as repo
from service.sanctions.models import PartnerSuspension, Rule
from service.sanctions.schemas import SuspensionRead, SuspensionRecord
from service.transparency import service as tlog

ACTOR = "sanctions"
# Refusals at submission that say a budget of the partner ran out: asking again and again is a trip.
BUDGET_REFUSALS = frozenset(
    str(c.code)
    for c in (
        quota_errors.PrivacyBudgetExhausted,
        quota_errors.LeakageBudgetExhausted,
        quota_errors.LifetimeLeakageExhausted,
        quota_errors.LifetimeRowsExhausted,
        quota_errors.DailyQueryBudgetExhausted,
    )
)
JOB_RULES = {
    ErrorClass.OUTPUT_REJECTED: Rule.OUTPUT_REJECTED,
    ErrorClass.QUERY_BUDGET_EXCEEDED: Rule.QUERY_BUDGET_EXCEEDED,
}
SANCTION_LEAF = "policy"  # the transparency log's leaf kind for operators' and policy decisions


def record_job_ending(
    session: Session,
    principal_id: int,
    job_id: str,
    error_class: ErrorClass | None,
    at: datetime,
    protocol_errors: int = 0,
) -> None:
    """A job ended: a trip if its ending broke a hard rule, and one more if its code abused the
    model channel (`protocol_errors`: the sidecar's count of frames and ops the SDK never sends,
    service.inference.server.PROTOCOL_ABUSE), whatever the ending. `at`: when its partner sees it."""
    rule = JOB_RULES.get(error_class) if error_class is not None else None
    if rule is not None:
        repo.add_trip(session, principal_id, rule, f"job:{job_id}", at)
    if protocol_errors > 0:
        repo.add_trip(session, principal_id, Rule.PROTOCOL_ABUSE, f"job:{job_id}", at)


def record_refusal(session: Session, settings: Settings, principal_id: int, name: str, code: str | None) -> None:
    """A submission was refused: a trip if it was for an exhausted budget; then suspend the partner
    if it is now past its limit (the refusal's session commits both)."""
    if code in BUDGET_REFUSALS:
        repo.add_trip(session, principal_id, Rule.BUDGET_EXHAUSTED, str(code), utcnow())
    suspend_if_due(session, settings, principal_id, name)


def check(session: Session, settings: Settings, principal_id: int, name: str) -> None:
    """Admission: refuse a suspended partner, or one whose trips today are past its limit (its
    refusal's transaction then records the suspension, `record_refusal`)."""
    found = repo.active(session, principal_id)
    reason = found.reason if found is not None else _due_reason(session, settings, principal_id, name, utcnow())
    if reason is not None:
        raise errors.PartnerSuspended(
            f"you are suspended: {reason}", alternatives=["ask an operator to review and lift the suspension"]
        )


def suspend_if_due(session: Session, settings: Settings, principal_id: int, name: str) -> PartnerSuspension | None:
    """Suspend the partner if its trips today are past its limit and it is not suspended already."""
    if repo.active(session, principal_id) is not None:
        return None
    now = utcnow()
    reason = _due_reason(session, settings, principal_id, name, now)
    if reason is None:
        return None
    trips = {str(k): v for k, v in _trips_today(session, principal_id, now).items()}
    row = PartnerSuspension(principal_id=principal_id, reason=reason, trips=trips, suspended_at=now, suspended_by=ACTOR)
    session.add(row)
    session.flush()
    _record(session, ACTOR, "partner.suspended", name, {"reason": reason, "trips": trips})
    return row


def lift(session: Session, settings: Settings, name: str, reason: str, actor: str) -> SuspensionRead:
    """End a partner's suspension (operators). Its trips so far no longer count."""
    principal_id = _partner_id(session, name)
    reason = reason.strip()
    if not reason:
        raise policy_errors.ReasonRequired("say why (`reason`): it is recorded with the lift")
    suspend_if_due(session, settings, principal_id, name)
    found = repo.active(session, principal_id)
    if found is None:
        raise errors.PartnerNotSuspended(f"partner {name} is not suspended")
    found.lifted_at, found.lifted_by, found.lift_reason = utcnow(), actor[:96], reason
    session.flush()
    _record(session, actor, "partner.suspension_lifted", name, {"reason": reason, "suspension": found.id})
    return read(session, settings, name)


def read(session: Session, settings: Settings, name: str) -> SuspensionRead:
    """A partner's suspension as operators see it (suspending it first if it is due)."""
    principal_id = _partner_id(session, name)
    suspend_if_due(session, settings, principal_id, name)
    found = repo.active(session, principal_id)
    now = utcnow()
    return SuspensionRead(
        partner=name,
        suspended=found is not None,
        reason=found.reason if found else None,
        since=found.suspended_at if found else None,
        trips_today={str(k): v for k, v in _trips_today(session, principal_id, now).items()},
        limit=policies.partner_limits(session, settings, name).hard_rule_trips_per_day,
        history=[SuspensionRecord.model_validate(r) for r in repo.history(session, principal_id)],
    )


def _partner_id(session: Session, name: str) -> int:
    found = auth_repo.principal_by_name(session, name, Role.PARTNER)
    if found is None:
        raise errors.SanctionSubjectNotFound(f"no partner {name}")
    return found.id


def _trips_today(session: Session, principal_id: int, now: datetime) -> dict[Rule, int]:
    """Trips of the UTC day so far that the partner can see, after the last lift."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return repo.trips_between(session, principal_id, start, now, after=repo.last_lifted_at(session, principal_id))


def _due_reason(session: Session, settings: Settings, principal_id: int, name: str, now: datetime) -> str | None:
    trips = _trips_today(session, principal_id, now)
    limit = policies.partner_limits(session, settings, name).hard_rule_trips_per_day
    total = sum(trips.values())
    if total < limit:
        return None
    counts = ", ".join(f"{rule}: {n}" for rule, n in sorted(trips.items()))
    return f"{total} hard-rule trips today ({counts}); the limit is {limit} a day"


def _record(session: Session, actor: str, action: str, partner: str, data: dict[str, object]) -> None:
    event = ledger.append(session, actor=actor, action=action, subject=f"principal:{partner}", data=data)
    # A commitment to the audit record, without the partner's name (as for policy changes).
    tlog.append(
        session,
        SANCTION_LEAF,
        canonical_json({"kind": SANCTION_LEAF, "scope": "sanction", "audit_leaf_sha256": event.leaf_hash}).encode(),
    )
