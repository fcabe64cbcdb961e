"""Admission: a job is recorded only if it fits every limit, and everything it may spend is reserved
before it runs. Refusals say why and what the partner can do instead.

Order: registry lookups, metrics, dataset size, resources and ε policy (a bad request is refused
even when it could be reused) → the same release already made or on its way (returned, nothing
spent) → the job row → every budget, reserved by quotas (jobs in progress, model rows, ε, bits, a
release slot) → queued, or awaiting an operator's approval of its suite. The caller holds the
partner's admission lock and commits; a refusal raises and the transaction rolls back whole.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from service import __version__
from service.auth.service import Caller
from service.canonical import digest
from service.config import PartnerLimits, Settings
from service.jobs import errors
from service.jobs import repository as repo
from service.jobs.models import Job
from service.jobs.schemas import JobCreate
from service.jobs.service import transition
from service.jobs.states import JobState
from service.ledger import service as ledger
from service.quotas import leakage
from service.quotas.service import Budgets, Partner, Plan
from service.registry import service as registry
from service.release import gate
from service.release.catalogue import MetricDecl


def _resources(req: JobCreate, settings: Settings, limits: PartnerLimits) -> dict[str, float]:
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
        "query_budget": limits.max_query_budget,
    }
    over = [f"{k} <= {ceilings[k]}" for k, v in chosen.items() if v > ceilings[k]]
    if over:
        raise errors.ResourcesExceedLimit("requested resources exceed your limits", alternatives=over)
    return chosen


def release_key(
    principal_id: int, suite: dict[str, Any], model: dict[str, Any], dataset: dict[str, Any], metrics: list[str]
) -> str:
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


def _privacy(
    req: JobCreate, settings: Settings, limits: PartnerLimits, decls: dict[str, MetricDecl], policy: gate.Policy
) -> dict[str, Any]:
    noised = gate.noised(decls, policy)
    if not noised:
        return {"mechanism": None, "epsilon_per_metric": 0.0, "epsilon_total": 0.0, "noised_metrics": []}
    ceiling = limits.max_epsilon_per_metric
    eps = req.epsilon if req.epsilon is not None else min(settings.dp_epsilon_per_metric, ceiling)
    if eps > ceiling:
        raise errors.EpsilonAbovePolicy(
            f"epsilon {eps} per metric is above your policy's {ceiling}", alternatives=[f"epsilon <= {ceiling}"]
        )
    return {
        "mechanism": policy.mechanism,
        "epsilon_per_metric": eps,
        "epsilon_total": round(eps * len(noised), 6),
        "noised_metrics": noised,
        "delta": policy.delta if policy.mechanism == "gaussian" else 0.0,
    }


def submit(session: Session, settings: Settings, budgets: Budgets, caller: Caller, req: JobCreate) -> tuple[Job, bool]:
    """Record an admitted job, or return the partner's earlier job for the same release (True)."""
    limits = budgets.limits(caller.name)
    suite = registry.visible_suite(session, req.suite, caller.principal_id, caller.role)
    model = registry.usable_model(session, req.model)
    dataset = registry.resolve_dataset(session, req.dataset)
    decls_all = suite.metric_decls
    unknown = [m for m in req.metrics if m not in decls_all]
    if unknown or len(set(req.metrics)) != len(req.metrics):
        raise errors.UndeclaredMetric(
            f"metrics {unknown or req.metrics} are not declared once each by suite {suite.ref}",
            alternatives=list(decls_all),
        )
    if dataset.rows < settings.min_dataset_rows:
        raise errors.DatasetTooSmall(
            f"dataset {dataset.ref} has fewer than {settings.min_dataset_rows} rows",
            alternatives=["choose a larger dataset"],
        )
    refs = (
        {"name": suite.name, "version": suite.version, "sha256": suite.sha256},
        {"name": model.name, "version": model.version, "sha256": model.sha256},
        {"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256},
    )
    decls = {m: decls_all[m] for m in sorted(req.metrics)}
    resources = _resources(req, settings, limits)
    policy = gate.Policy.from_settings(settings)
    privacy = _privacy(req, settings, limits, decls, policy)
    key = release_key(caller.principal_id, *refs, req.metrics)
    earlier = repo.same_release(session, caller.principal_id, key)
    if earlier is not None:
        ledger.append(
            session, actor=caller.actor, action="job.reused", subject=f"job:{earlier.id}", data={"release_key": key}
        )
        return earlier, True
    most = leakage.job_bits(settings, gate.max_bits(decls, dataset.rows, privacy["epsilon_per_metric"], policy))
    spec: dict[str, Any] = {
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
        state=JobState.SUBMITTED,
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
    plan = Plan(
        dataset_id=dataset.id,
        dataset_ref=dataset.ref,
        epsilon_per_metric=privacy["epsilon_per_metric"],
        epsilon_total=privacy["epsilon_total"],
        noised_metrics=tuple(privacy["noised_metrics"]),
        bits=spec["leakage_bits"],
        rows=int(resources["query_budget"]),
    )
    budgets.reserve(session, Partner(caller.principal_id, caller.name), job.id, plan)
    transition(session, job, JobState.QUEUED if suite.approved else JobState.AWAITING_APPROVAL, actor="admission")
    return job, False


def record_refusal(session: Session, caller: Caller, code: str | None, req: JobCreate) -> None:
    """Refusals are decisions too. Called on a session whose admission rolled back; the caller commits."""
    ledger.append(
        session,
        actor=caller.actor,
        action="job.refused",
        subject=f"principal:{caller.name}",
        data={
            "reason": code,
            "suite": req.suite,
            "model": req.model,
            "dataset": req.dataset,
            "metrics": sorted(req.metrics),
        },
    )
