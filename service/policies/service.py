"""Quotas and policies as data: what an operator set per partner and per dataset version, over the
deployment's defaults (the EVALGATE_* settings), read where they apply and changed live.

Reading: `partner_limits`, `dataset_rules`, `epsilon_budget` and `gate_policy` are the one reader,
used at admission (jobs.admission, quotas.Budgets) and at the gate (release.service). They read the
database every time, two primary-key lookups, so a change committed by any process applies to the
next admission and the next gating on every API process and worker, with no cache to go stale.

Combining: a partner's ε budget per dataset version and its ceiling on ε per metric meet the dataset
version's own; the smaller applies (each is its own value or the default), so neither an operator
raising one partner nor one raising one dataset can loosen the other's.

Writing: `set_partner` and `set_dataset` replace what an operator set, if the row is still at the
version the operator read (the ETag), with a reason, on the audit log and the transparency log.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from service.auth import repository as auth_repo
from service.auth.roles import Role
from service.canonical import canonical_json
from service.config import PartnerLimits, Settings
from service.db import utcnow
from service.ledger import service as ledger
from service.policies import errors
from service.policies import repository as repo
from service.policies.models import DatasetPolicy, PartnerPolicy
from service.policies.schemas import (
    DatasetPolicyRead,
    DatasetPolicyValues,
    DatasetRules,
    PartnerPolicyChange,
    PartnerPolicyRead,
    PartnerPolicyValues,
)
from service.registry import repository as registry_repo
from service.registry.models import DatasetVersion, ModelVersion
from service.release import gate
from service.transparency import service as tlog

LIMIT_KEYS = tuple(PartnerLimits.model_fields)
V = TypeVar("V", bound=BaseModel)
POLICY_LEAF = "policy"
PARTNER_SCOPE = "partner"
DATASET_SCOPE = "dataset"


# -- reading ----------------------------------------------------------------------------------------------


def partner_limits(session: Session, settings: Settings, partner: str) -> PartnerLimits:
    """A partner's limits now: what an operator set, else the default (EVALGATE_PARTNER_QUOTAS, else
    the deployment-wide settings)."""
    return _limits(settings, partner, repo.partner_policy_named(session, partner))


def _limits(settings: Settings, partner: str, row: PartnerPolicy | None) -> PartnerLimits:
    base = settings.limits_for(partner)
    if row is None:
        return base
    return base.model_copy(update={k: getattr(row, k) for k in LIMIT_KEYS if getattr(row, k) is not None})


def dataset_rules(session: Session, settings: Settings, dataset_version_id: int) -> DatasetRules:
    return _rules(settings, repo.dataset_policy(session, dataset_version_id))


def dataset_rules_of(session: Session, settings: Settings, name: str, version: str) -> DatasetRules:
    """The rules of a dataset version by its name (the defaults if it is gone)."""
    found = registry_repo.by_name_version(session, DatasetVersion, name, version)
    return _rules(settings, repo.dataset_policy(session, found.id) if found is not None else None)


def _defaults(settings: Settings) -> DatasetRules:
    return DatasetRules(
        dp_mechanism=settings.dp_mechanism,
        epsilon_per_metric=settings.dp_epsilon_per_metric,
        max_epsilon_per_metric=settings.dp_max_epsilon_per_metric,
        epsilon_budget=settings.dp_epsilon_budget,
        suppress_below_rows=settings.suppress_below_rows,
        suppress_below_class_rows=settings.suppress_below_class_rows,
        min_dataset_rows=settings.min_dataset_rows,
    )


def _rules(settings: Settings, row: DatasetPolicy | None) -> DatasetRules:
    base = _defaults(settings)
    if row is None:
        return base
    keys = DatasetRules.model_fields
    return base.model_copy(update={k: getattr(row, k) for k in keys if getattr(row, k) is not None})


def epsilon_budget(limits: PartnerLimits, rules: DatasetRules) -> float:
    """ε a partner may spend on a dataset version: the smaller of the partner's and the dataset's."""
    return min(limits.epsilon_budget, rules.epsilon_budget)


def epsilon_ceiling(limits: PartnerLimits, rules: DatasetRules) -> float:
    return min(limits.max_epsilon_per_metric, rules.max_epsilon_per_metric)


def gate_policy(settings: Settings, rules: DatasetRules) -> gate.Policy:
    return replace(
        gate.Policy.from_settings(settings),
        min_rows=rules.suppress_below_rows,
        min_class_rows=rules.suppress_below_class_rows,
        mechanism=None if rules.dp_mechanism == "none" else rules.dp_mechanism,
    )


def check_access(session: Session, partner: str, model: ModelVersion, dataset: DatasetVersion) -> None:
    """Refuse a model or dataset the partner's policy leaves out, naming those it may use."""
    check_model_access(session, partner, model)
    check_dataset_access(session, partner, dataset)


def check_model_access(session: Session, partner: str, model: ModelVersion) -> None:
    """Refuse a model version the partner's policy leaves out (its jobs, its stand-in: service.twins)."""
    row = repo.partner_policy_named(session, partner)
    if row is not None and row.models is not None and not _allowed(row.models, model.name, model.version):
        raise errors.ModelNotAllowed(
            f"your policy does not include model {model.ref}",
            alternatives=[f"use one of: {', '.join(row.models)}" if row.models else "ask the operator for access"],
        )


def check_dataset_access(session: Session, partner: str, dataset: DatasetVersion) -> None:
    """Refuse a dataset version the partner's policy leaves out (its jobs, its twin: service.twins)."""
    row = repo.partner_policy_named(session, partner)
    if row is not None and row.datasets is not None and not _allowed(row.datasets, dataset.name, dataset.version):
        raise errors.DatasetNotAllowed(
            f"your policy does not include dataset {dataset.ref}",
            alternatives=[f"use one of: {', '.join(row.datasets)}" if row.datasets else "ask the operator for access"],
        )


def denied_assets(
    session: Session, partner: str, model: ModelVersion, dataset: DatasetVersion
) -> list[tuple[str, str, list[str]]]:
    """What `check_access` would refuse, all of it: ("models" or "datasets", the version asked, those
    the partner may use). For a request an operator may grant (service.approvals)."""
    row = repo.partner_policy_named(session, partner)
    if row is None:
        return []
    found = []
    if row.models is not None and not _allowed(row.models, model.name, model.version):
        found.append(("models", model.ref, list(row.models)))
    if row.datasets is not None and not _allowed(row.datasets, dataset.name, dataset.version):
        found.append(("datasets", dataset.ref, list(row.datasets)))
    return found


def _allowed(entries: list[str], name: str, version: str) -> bool:
    return name in entries or f"{name}@{version}" in entries


def read_partner(session: Session, settings: Settings, partner: str) -> PartnerPolicyRead:
    found = auth_repo.principal_by_name(session, partner, Role.PARTNER)
    if found is None:
        raise errors.PolicySubjectNotFound(f"no partner {partner}")
    row = repo.partner_policy(session, found.id)
    values = _values(PartnerPolicyValues, row)
    return PartnerPolicyRead(
        partner=partner,
        version=row.version if row else 0,
        public_name=values.public_name or partner,
        limits=_limits(settings, partner, row),
        models=values.models,
        datasets=values.datasets,
        set=values,
        updated_at=row.updated_at if row else None,
    )


def read_partners(session: Session, settings: Settings) -> list[PartnerPolicyRead]:
    """Every partner's policy, by name (operators)."""
    return [read_partner(session, settings, name) for name in auth_repo.names_with_role(session, Role.PARTNER)]


def partner_history(session: Session, partner: str) -> list[PartnerPolicyChange]:
    """Every change of a partner's policy, newest first, from the audit log (operators)."""
    if auth_repo.principal_by_name(session, partner, Role.PARTNER) is None:
        raise errors.PolicySubjectNotFound(f"no partner {partner}")
    return _history(session, f"principal:{partner}", PARTNER_SCOPE)


def dataset_history(session: Session, name: str, version: str) -> list[PartnerPolicyChange]:
    """Every change of a dataset version's policy, newest first, from the audit log (operators)."""
    dataset = dataset_named(session, name, version)
    return _history(session, f"dataset:{dataset.ref}", DATASET_SCOPE)


def dataset_defaults(settings: Settings) -> DatasetRules:
    """What applies to a dataset version where an operator set nothing: the deployment's settings."""
    return _defaults(settings)


def _history(session: Session, subject: str, scope: str) -> list[PartnerPolicyChange]:
    return [
        PartnerPolicyChange(
            version=e["data"]["version"],
            at=datetime.fromisoformat(e["ts"]),
            actor=e["actor"],
            reason=e["data"]["reason"],
            changed=e["data"]["changed"],
            old=e["data"]["old"],
            new=e["data"]["new"],
        )
        for e in reversed(ledger.events_for(session, subject, f"policy.{scope}_changed"))
    ]


def public_names(session: Session, principal_ids: list[int]) -> dict[int, str]:
    """The names partners are shown by in public (results, leaderboards): an operator's
    `public_name`, else the principal's name."""
    return repo.public_names(session, principal_ids)


def dataset_named(session: Session, name: str, version: str) -> DatasetVersion:
    found = registry_repo.by_name_version(session, DatasetVersion, name, version)
    if found is None:
        raise errors.PolicySubjectNotFound(f"no dataset {name}@{version}")
    return found


def read_dataset(session: Session, settings: Settings, name: str, version: str) -> DatasetPolicyRead:
    dataset = dataset_named(session, name, version)
    row = repo.dataset_policy(session, dataset.id)
    return DatasetPolicyRead(
        dataset=dataset.ref,
        version=row.version if row else 0,
        rules=_rules(settings, row),
        set=_values(DatasetPolicyValues, row),
        updated_at=row.updated_at if row else None,
    )


def _values(schema: type[V], row: PartnerPolicy | DatasetPolicy | None) -> V:
    if row is None:
        return schema()
    return schema.model_validate({k: getattr(row, k) for k in schema.model_fields})


# -- writing ----------------------------------------------------------------------------------------------


def set_partner(
    session: Session,
    settings: Settings,
    partner: str,
    values: PartnerPolicyValues,
    *,
    reason: str,
    actor: str,
    if_match: int | None,
) -> PartnerPolicyRead:
    """Replace what an operator set for a partner, if it is still at version `if_match`."""
    found = auth_repo.principal_by_name(session, partner, Role.PARTNER)
    if found is None:
        raise errors.PolicySubjectNotFound(f"no partner {partner}")
    for kind, model, entries in (("model", ModelVersion, values.models), ("dataset", DatasetVersion, values.datasets)):
        unknown = [e for e in entries or [] if not _registered(session, model, e)]
        if unknown:
            raise errors.UnknownAsset(f"no {kind} {', '.join(unknown)} is registered")
    old = _values(PartnerPolicyValues, repo.partner_policy(session, found.id))
    _write(
        session,
        PartnerPolicy,
        found.id,
        old,
        values,
        reason=reason,
        actor=actor,
        if_match=if_match,
        subject=f"principal:{partner}",
        scope=PARTNER_SCOPE,
    )
    return read_partner(session, settings, partner)


def set_dataset(
    session: Session,
    settings: Settings,
    name: str,
    version: str,
    values: DatasetPolicyValues,
    *,
    reason: str,
    actor: str,
    if_match: int | None,
) -> DatasetPolicyRead:
    """Replace what an operator set for a dataset version, if it is still at version `if_match`."""
    dataset = dataset_named(session, name, version)
    rules = _rules(settings, None).model_copy(update=values.model_dump(exclude_none=True))
    if rules.epsilon_per_metric > rules.max_epsilon_per_metric:
        raise errors.PolicyInvalid(
            f"the default epsilon per metric ({rules.epsilon_per_metric}) is above the ceiling "
            f"({rules.max_epsilon_per_metric})",
            alternatives=["lower epsilon_per_metric", "raise max_epsilon_per_metric"],
        )
    if rules.suppress_below_class_rows > rules.suppress_below_rows:
        raise errors.PolicyInvalid(
            f"suppress_below_class_rows ({rules.suppress_below_class_rows}) is above suppress_below_rows "
            f"({rules.suppress_below_rows})"
        )
    old = _values(DatasetPolicyValues, repo.dataset_policy(session, dataset.id))
    _write(
        session,
        DatasetPolicy,
        dataset.id,
        old,
        values,
        reason=reason,
        actor=actor,
        if_match=if_match,
        subject=f"dataset:{dataset.ref}",
        scope=DATASET_SCOPE,
    )
    return read_dataset(session, settings, name, version)


def _registered(session: Session, model: type[ModelVersion] | type[DatasetVersion], entry: str) -> bool:
    name, _, version = entry.partition("@")
    versions = registry_repo.versions_of(session, model, name)
    return version in versions if version else bool(versions)


def _write(
    session: Session,
    model: type[PartnerPolicy] | type[DatasetPolicy],
    key: int,
    old: BaseModel,
    new: BaseModel,
    *,
    reason: str,
    actor: str,
    if_match: int | None,
    subject: str,
    scope: str,
) -> None:
    reason = reason.strip()
    if not reason:
        raise errors.ReasonRequired("say why (`reason`): it is recorded with the change")
    if if_match is None:
        raise errors.IfMatchRequired("send If-Match with the ETag of your last read of this policy")
    values: dict[str, Any] = new.model_dump()
    if not repo.compare_and_set(
        session, model, key, if_match, {**values, "updated_at": utcnow(), "updated_by": actor[:96]}
    ):
        raise errors.PolicyChanged(
            "the policy changed since you read it", alternatives=["read it again and apply your change to that"]
        )
    before = old.model_dump()
    event = ledger.append(
        session,
        actor=actor,
        action=f"policy.{scope}_changed",
        subject=subject,
        data={
            "old": before,
            "new": values,
            "changed": sorted(k for k in values if values[k] != before.get(k)),
            "reason": reason,
            "version": if_match + 1,
        },
    )
    # The public log gets a commitment to the audit record, not the record: it says that a policy
    # changed and lets an auditor holding the record prove it, without naming partners to researchers.
    tlog.append(
        session,
        POLICY_LEAF,
        canonical_json({"kind": POLICY_LEAF, "scope": scope, "audit_leaf_sha256": event.leaf_hash}).encode(),
    )
