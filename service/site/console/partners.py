"""The console's partners: one row each with what they used today against their limits, and the form
that changes a partner's limits (the same schema, service call and version check as
`PUT /v1/policies/partners/{partner}`: a form is a PUT with its If-Match in a hidden field)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from service.auth import repository as auth_repo
from service.auth.roles import Role
from service.config import Settings
from service.jobs import admission
from service.policies import service as policies
from service.policies.schemas import PartnerPolicyChange, PartnerPolicyRead, PartnerPolicyUpdate, PartnerPolicyValues
from service.quotas.service import Budgets, Partner
from service.sanctions import service as sanctions
from service.sanctions.schemas import SuspensionRead
from service.site.console.access import text

LISTS = ("models", "datasets")
# What a person calls each value; a field not named here (added later) shows as its own name.
LABELS = {
    "public_name": "Public name",
    "rows_per_day": "Model rows per day",
    "max_query_budget": "Largest query budget (model rows per job)",
    "epsilon_budget": "ε budget per dataset version",
    "max_epsilon_per_metric": "Most ε per metric",
    "bits_per_day": "Leakage bits per day",
    "releases_per_window": "Releases per window",
    "max_concurrent_jobs": "Jobs in progress",
    "models": "Models the partner may use",
    "datasets": "Datasets the partner may use",
}


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def show(value: object) -> str:
    """A number as a person reads it: whole numbers with separators, others to 4 significant digits."""
    if value is None:
        return "default"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ", ".join(value) if isinstance(value, list) else str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


# -- the partners table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One use against its limit, drawn as a <meter> (which says its value to a screen reader too)."""

    what: str
    used: float
    limit: float

    @property
    def high(self) -> float:
        return self.limit * 0.8  # the meter turns amber from here

    @property
    def top(self) -> float:
        return max(self.limit, self.used, 1e-9)  # a limit of 0 still draws (full once anything is used)

    @property
    def text(self) -> str:
        return f"{show(self.used)} of {show(self.limit)}"


@dataclass(frozen=True)
class PartnerRow:
    name: str
    public_name: str
    bits: Bar
    rows: Bar
    jobs: Bar
    epsilon: list[tuple[str, Bar]]  # (dataset version, ε spent of its budget), those the partner spent ε on
    refusals: int
    policy_version: int
    suspension: SuspensionRead  # whether it is suspended, why, and today's hard-rule trips


def start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def partner_rows(session: Session, settings: Settings, budgets: Budgets, now: datetime) -> list[PartnerRow]:
    """Every partner, by name: today's use of each daily limit, ε per dataset version, jobs in progress,
    submissions refused today, and its suspension (service.sanctions) with today's hard-rule trips."""
    refused = admission.refusals_since(session, start_of_day(now))
    rows = []
    for policy in policies.read_partners(session, settings):
        principal = auth_repo.principal_by_name(session, policy.partner, Role.PARTNER)
        assert principal is not None  # read_partners lists partners
        budget = budgets.read(session, Partner(principal.id, principal.name))
        rows.append(
            PartnerRow(
                name=policy.partner,
                public_name=policy.public_name,
                bits=Bar("Leakage bits today", budget.leakage_bits.used, budget.leakage_bits.limit),
                rows=Bar("Model rows today", budget.model_rows.used, budget.model_rows.limit),
                jobs=Bar("Jobs in progress", budget.concurrent_jobs.active, budget.concurrent_jobs.limit),
                epsilon=[(e.dataset, Bar(f"ε on {e.dataset}", e.spent, e.budget)) for e in budget.epsilon],
                refusals=refused.get(policy.partner, 0),
                policy_version=policy.version,
                suspension=sanctions.read(session, settings, policy.partner),
            )
        )
    return rows


# -- the limits form ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    value: str  # as the input shows it
    default: str  # what applies when it is left empty
    numeric: bool


@dataclass(frozen=True)
class ListField:
    name: str
    label: str
    only: bool  # False: every one; True: only those in `value` (none if it is empty)
    value: str


@dataclass(frozen=True)
class LimitsForm:
    partner: str
    version: int  # the policy's version this form was filled from: its If-Match
    fields: list[Field]
    lists: list[ListField]
    reason: str = ""


def entry(value: Any) -> str:
    """A setting's value as a form field shows it (a whole float without its ".0")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def form_of(
    settings: Settings, read: PartnerPolicyRead, values: dict[str, Any] | None = None, reason: str = ""
) -> LimitsForm:
    """The form for a partner's policy as read, or refilled with what an operator typed (`values`:
    field name -> text, and for a list `(only, text)`)."""
    stored = read.set.model_dump()
    defaults = settings.limits_for(read.partner).model_dump()
    fields, lists = [], []
    for name in PartnerPolicyValues.model_fields:
        if name in LISTS:
            entries = stored[name]
            only, shown = (entries is not None, ", ".join(entries or [])) if values is None else values[name]
            lists.append(ListField(name, label(name), only, shown))
            continue
        value = entry(stored[name]) if values is None else values[name]
        default = read.partner if name == "public_name" else show(defaults.get(name))
        fields.append(Field(name, label(name), value, default, numeric=name in defaults))
    return LimitsForm(read.partner, read.version, fields, lists, reason)


@dataclass(frozen=True)
class Submitted:
    """What a limits form sent: the typed text (to show again), the reason and the version it was read at."""

    typed: dict[str, Any]
    reason: str
    version: int | None


def submitted(form: FormData) -> Submitted:
    typed: dict[str, Any] = {}
    for name in PartnerPolicyValues.model_fields:
        if name in LISTS:
            typed[name] = (text(form, f"{name}_mode") == "only", text(form, name, 40_000))
        else:
            typed[name] = text(form, name, 200)
    raw = text(form, "version", 12)
    return Submitted(typed, text(form, "reason", 2000), int(raw) if raw.isdigit() else None)


def validate(sent: Submitted) -> PartnerPolicyUpdate | list[str]:
    """The API's request body made of the form, or what is wrong with it, said per field."""
    body: dict[str, Any] = {"reason": sent.reason}
    for name, typed in sent.typed.items():
        if name in LISTS:
            only, entries = typed
            body[name] = [e.strip() for e in entries.replace("\n", ",").split(",") if e.strip()] if only else None
        else:
            body[name] = typed or None
    try:
        return PartnerPolicyUpdate.model_validate(body)
    except ValidationError as e:
        return [f"{label(str(p['loc'][0])) if p['loc'] else 'The form'}: {p['msg']}" for p in e.errors()]


def history(session: Session, partner: str) -> list[PartnerPolicyChange]:
    return policies.partner_history(session, partner)
