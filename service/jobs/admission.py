"""Admission: a job is recorded only if it fits every limit, and everything it may spend is reserved
before it runs. Refusals say why and what the partner can do instead.

Order: registry lookups, resources and ε policy (a bad request is refused even when it could be
reused) → same release already made or in progress (returned, nothing spent) → jobs in progress → model rows today → ε for the dataset → leakage bits today → releases
in the window. The caller holds the partner's admission lock and commits; a refusal raises, the
transaction rolls back, and the one reservation made outside it (bits) is given back here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import __version__
from service.auth.service import Caller
from service.canonical import digest
from service.config import Settings
from service.errors import Forbidden, InvalidInput, TooManyRequests
from service.jobs.models import Job
from service.jobs.schemas import JobCreate
from service.jobs.states import transition
from service.ledger import service as ledger
from service.quotas import epsilon, leakage
from service.quotas import service as quotas_service
from service.quotas.guards import AdmissionGuards
from service.quotas.store import DailyQuota, seconds_to_reset
from service.registry import service as registry
from service.registry.models import DatasetVersion
from service.release import gate

# A job with one of these outcomes made no release, so the same request may run again.
NOT_RELEASED = frozenset({"rejected", "failed", "cancelled"})


@dataclass
class Stores:
    guards: AdmissionGuards
    bits: DailyQuota
    rows_used_today: int


def _resources(req: JobCreate, settings: Settings, caller: Caller) -> dict:
    r = req.resources
    chosen = {
        "memory_mb": r.memory_mb or settings.default_memory_mb,
        "cpus": r.cpus or settings.default_cpus,
        "timeout_s": r.timeout_s or settings.default_timeout_s,
        "query_budget": r.query_budget or settings.default_query_budget,
    }
    ceilings = {
        "memory_mb": settings.max_memory_mb,
        "cpus": settings.max_cpus,
        "timeout_s": settings.max_timeout_s,
        "query_budget": settings.partner_limit(caller.name, "max_query_budget"),
    }
    over = [f"{k} <= {ceilings[k]}" for k, v in chosen.items() if v > ceilings[k]]
    if over:
        raise InvalidInput("requested resources exceed your limits", code="resources_exceed_limit", alternatives=over)
    return chosen


def release_key(principal_id: int, suite: dict, model: dict, dataset: dict, metrics: list[str]) -> str:
    """What makes two requests 'the same release': seed, ε and resources are deliberately left out, so
    asking again with another seed or ε cannot buy fresh noise to average away."""
    return digest(
        {
            "principal": principal_id,
            "suite": suite["sha256"],
            "model": [model["name"], model["version"], model["sha256"]],
            "dataset": [dataset["name"], dataset["version"], dataset["sha256"]],
            "metrics": sorted(metrics),
        }
    )


def reusable(session: Session, principal_id: int, key: str) -> Job | None:
    """The partner's earlier job for the same release, released or still on its way."""
    return session.execute(
        select(Job)
        .where(Job.principal_id == principal_id, Job.release_key == key, Job.state.not_in(NOT_RELEASED))
        .order_by(Job.created_at.desc())
        .limit(1)
    ).scalar_one_or_none()


def _privacy(req: JobCreate, settings: Settings, caller: Caller, decls, policy: gate.Policy) -> dict:
    noised = gate.noised(decls, policy)
    if not noised:
        return {"mechanism": None, "epsilon_per_metric": 0.0, "epsilon_total": 0.0, "noised_metrics": []}
    ceiling = settings.partner_limit(caller.name, "max_epsilon_per_metric")
    eps = req.epsilon if req.epsilon is not None else min(settings.dp_epsilon_per_metric, ceiling)
    if eps > ceiling:
        raise InvalidInput(
            f"epsilon {eps} per metric is above your policy's {ceiling}",
            code="epsilon_above_policy",
            alternatives=[f"epsilon <= {ceiling}"],
        )
    return {
        "mechanism": policy.mechanism,
        "epsilon_per_metric": eps,
        "epsilon_total": round(eps * len(noised), 6),
        "noised_metrics": noised,
        "delta": policy.delta if policy.mechanism == "gaussian" else 0.0,
    }


def _other_datasets(
    session: Session, caller: Caller, settings: Settings, dataset: DatasetVersion, need: float
) -> list[str]:
    budget = settings.partner_limit(caller.name, "epsilon_budget")
    spent = {d.id: used for d, used in epsilon.spent_by_dataset(session, caller.principal_id)}
    out = []
    for d in session.execute(
        select(DatasetVersion)
        .where(DatasetVersion.id != dataset.id)
        .order_by(DatasetVersion.name, DatasetVersion.version)
    ).scalars():
        if d.rows >= settings.min_dataset_rows and budget - spent.get(d.id, 0.0) >= need:
            out.append(d.ref)
    return out[:10]


def _refuse_epsilon(session: Session, settings: Settings, caller: Caller, dataset: DatasetVersion, privacy: dict):
    budget = settings.partner_limit(caller.name, "epsilon_budget")
    left = max(0.0, budget - epsilon.spent(session, caller.principal_id, dataset.id))
    need, k = privacy["epsilon_total"], len(privacy["noised_metrics"])
    alternatives = []
    per_metric = privacy["epsilon_per_metric"]
    if left >= per_metric:
        alternatives.append(
            f"request at most {int(left // per_metric)} of the noised metrics "
            f"({', '.join(privacy['noised_metrics'])}): each costs epsilon {per_metric}"
        )
    if left > 0:
        alternatives.append(f"ask for epsilon <= {left / k:.6f} per metric (noisier values)")
    alternatives.append(f"ask the operator for a larger epsilon budget for {dataset.ref}")
    others = _other_datasets(session, caller, settings, dataset, need)
    if others:
        alternatives.append(f"use another dataset version with enough budget left: {', '.join(others)}")
    raise Forbidden(
        f"this job needs epsilon {need} on {dataset.ref}; {left:.6f} of your {budget} is left",
        code="privacy_budget_exhausted",
        alternatives=alternatives,
    )


def submit(session: Session, settings: Settings, caller: Caller, req: JobCreate, stores: Stores) -> tuple[Job, bool]:
    """Record an admitted job, or return the partner's earlier job for the same release (True)."""
    suite = registry.visible_suite(session, req.suite, caller.principal_id, caller.role)
    model = registry.usable_model(session, req.model)
    dataset = registry.resolve_dataset(session, req.dataset)
    decls_all = suite.metric_decls
    unknown = [m for m in req.metrics if m not in decls_all]
    if unknown or len(set(req.metrics)) != len(req.metrics):
        raise InvalidInput(
            f"metrics {unknown or req.metrics} are not declared once each by suite {suite.ref}",
            code="undeclared_metric",
            alternatives=list(decls_all),
        )
    if dataset.rows < settings.min_dataset_rows:
        raise InvalidInput(
            f"dataset {dataset.ref} has fewer than {settings.min_dataset_rows} rows",
            code="dataset_too_small",
            alternatives=["choose a larger dataset"],
        )
    refs = (
        {"name": suite.name, "version": suite.version, "sha256": suite.sha256},
        {"name": model.name, "version": model.version, "sha256": model.sha256},
        {"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256},
    )
    decls = {m: decls_all[m] for m in sorted(req.metrics)}
    resources = _resources(req, settings, caller)
    policy = settings.gate_policy()
    privacy = _privacy(req, settings, caller, decls, policy)
    key = release_key(caller.principal_id, *refs, req.metrics)
    earlier = reusable(session, caller.principal_id, key)
    if earlier is not None:
        ledger.append(
            session, actor=caller.actor, action="job.reused", subject=f"job:{earlier.id}", data={"release_key": key}
        )
        return earlier, True
    active = quotas_service.active_jobs(session, caller.principal_id)
    if active >= settings.partner_limit(caller.name, "max_concurrent_jobs"):
        raise TooManyRequests(
            f"you have {active} jobs in progress, the most allowed",
            code="too_many_concurrent_jobs",
            alternatives=["wait for one to finish, or cancel one"],
            retry_after_s=5,
        )
    if stores.rows_used_today >= settings.partner_limit(caller.name, "rows_per_day"):
        raise TooManyRequests(
            "today's model query budget is spent",
            code="daily_query_budget_exhausted",
            alternatives=[f"the budget resets at 00:00 UTC, in {seconds_to_reset()} s"],
            retry_after_s=seconds_to_reset(),
        )
    most = leakage.job_bits(settings, gate.max_bits(decls, dataset.rows, privacy["epsilon_per_metric"], policy))
    spec = {
        "suite": refs[0],
        "model": refs[1],
        "dataset": refs[2],
        "metrics": sorted(req.metrics),
        "declared": {m: d.model_dump(exclude_defaults=True) | {"kind": d.kind} for m, d in decls.items()},
        "privacy": privacy,
        "leakage_bits": round(most, 3),  # the most its ending can carry; charged if it runs
        "resources": resources,
        "seed": req.seed,
        "service_version": __version__,
    }
    job = Job(
        id=str(uuid.uuid4()),
        principal_id=caller.principal_id,
        state="submitted",
        spec=spec,
        spec_sha256=digest(spec),
        release_key=key,
        suite_version_id=suite.id,
        model_version_id=model.id,
        dataset_version_id=dataset.id,
    )
    session.add(job)
    session.flush()
    ledger.append(
        session,
        actor=caller.actor,
        action="job.submitted",
        subject=f"job:{job.id}",
        data={"spec_sha256": job.spec_sha256, "spec": spec},
    )
    if privacy["epsilon_total"] > 0 and not epsilon.try_spend(
        session,
        principal_id=caller.principal_id,
        dataset=dataset,
        epsilon=privacy["epsilon_total"],
        budget=settings.partner_limit(caller.name, "epsilon_budget"),
        job_id=job.id,
        actor=caller.actor,
    ):
        _refuse_epsilon(session, settings, caller, dataset, privacy)
    _reserve_bits(session, settings, caller, job, stores)
    transition(session, job, "queued" if suite.approved else "awaiting_approval", actor="admission")
    return job, False


def _reserve_bits(session: Session, settings: Settings, caller: Caller, job: Job, stores: Stores) -> None:
    """Reserve the most this job can carry, then take a release slot; give the bits back if refused."""
    most = job.spec["leakage_bits"]
    cap = settings.partner_limit(caller.name, "bits_per_day")
    want = leakage.to_millibits(most)
    if (
        stores.bits.reserve(
            caller.principal_id, job.id, want, leakage.to_millibits(cap), partial=False, session=session
        )
        < want
    ):
        left = max(0.0, cap - stores.bits.used(caller.principal_id) / 1000)
        raise TooManyRequests(
            f"this job can carry {most:.1f} bits; {left:.1f} of your {cap:g} bits for today are left",
            code="leakage_budget_exhausted",
            retry_after_s=seconds_to_reset(),
            alternatives=["request fewer metrics", f"the budget resets at 00:00 UTC, in {seconds_to_reset()} s"],
        )
    try:
        limit = settings.partner_limit(caller.name, "releases_per_window")
        if not stores.guards.take_release(caller.principal_id, limit):
            window = stores.guards.release_window(caller.principal_id, limit)
            raise TooManyRequests(
                f"at most {limit} releases per {settings.release_window_s} s",
                code="release_rate_exceeded",
                retry_after_s=window.reset_in_s,
                alternatives=[f"retry in {window.reset_in_s} s"],
            )
        ledger.append(
            session,
            actor=caller.actor,
            action="leakage.bits_reserved",
            subject=f"job:{job.id}",
            data={"bits": round(most, 3), "bits_per_day": cap},
        )
    except BaseException:
        stores.bits.settle(job.id, 0, session=session)
        raise
