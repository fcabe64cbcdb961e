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
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from service import __version__
from service.approvals import service as approvals
from service.approvals.models import ExceptionRule
from service.auth.service import Caller
from service.canonical import digest
from service.config import PartnerLimits, Settings
from service.errors import EvalgateError
from service.inference.model_info import Contract
from service.jobs import errors
from service.jobs import repository as repo
from service.jobs.dispatch import Dispatcher, commit_then_enqueue
from service.jobs.models import Job
from service.jobs.schemas import JobCost, JobCreate, JobPreview, Refusal
from service.jobs.service import record_submitted, transition
from service.jobs.states import JobState
from service.jobs.views import partner_view
from service.ledger import service as ledger
from service.policies import errors as policy_errors
from service.policies import service as policies
from service.policies.schemas import DatasetRules
from service.quotas import leakage, lifetime
from service.quotas.service import MICRO, Budgets, Partner, Plan, to_micro
from service.registry import fit, suites
from service.registry import service as registry
from service.registry.errors import DatasetTooSmall, ModelDatasetMismatch
from service.registry.models import DatasetVersion, SuiteVersion
from service.release import gate, metrics
from service.release.catalogue import MetricDecl
from service.sanctions import service as sanctions

REFUSED = "job.refused"  # the audit action of a refused submission
# Offered with every refusal an operator may lift for one job (service.approvals).
ASK_OPERATOR = 'resubmit with "request_approval": true to ask an operator for this exception'


def _ask(rule: ExceptionRule, asked: Any, limit: Any) -> dict[str, Any]:
    """One thing a job asks past its policy: exactly what an operator's grant allows."""
    return {"rule": str(rule), "asked": asked, "limit": limit}


def _resources(
    req: JobCreate,
    settings: Settings,
    limits: PartnerLimits,
    dataset: DatasetVersion,
    asks: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """The job's resources; a query budget above the partner's largest is refused, or, when the
    partner asked for approval (`asks` is a list), added to what it asks past its policy."""
    r = req.resources
    chosen = {
        "memory_mb": r.memory_mb or settings.default_memory_mb,
        "cpus": r.cpus or settings.default_cpus,
        "timeout_s": r.timeout_s or settings.default_timeout_s,
        "query_budget": r.query_budget or settings.default_query_budget or dataset.rows,
    }
    ceilings = {
        "memory_mb": settings.max_memory_mb,
        "cpus": settings.max_cpus,
        "timeout_s": settings.max_timeout_s,
        "query_budget": limits.max_query_budget,
    }
    if asks is not None and chosen["query_budget"] > ceilings["query_budget"]:
        asks.append(_ask(ExceptionRule.MAX_QUERY_BUDGET, chosen["query_budget"], ceilings["query_budget"]))
        ceilings["query_budget"] = chosen["query_budget"]
    over = [f"{k} <= {ceilings[k]}" for k, v in chosen.items() if v > ceilings[k]]
    if over:
        # Only the query budget is a partner's policy; memory, CPUs and time are the deployment's.
        extra = [ASK_OPERATOR] if chosen["query_budget"] > ceilings["query_budget"] else []
        raise errors.ResourcesExceedLimit("requested resources exceed your limits", alternatives=over + extra)
    return chosen


def _same_release(session: Session, settings: Settings, caller: Caller, key: str) -> Job | None:
    """The partner's earlier job for the same release, released or, as the partner sees it, still on
    its way. Judged by the partner's own (padded) view, never by how the job really stands: a job
    that really ended without a release is reused until its padded completion time, as the partner
    sees it running until then; otherwise a free dry run would tell the moment it really ended."""
    earlier = repo.newest_for_release(session, caller.principal_id, key)
    if earlier is None:
        return None
    state, _error, _finished = partner_view(earlier, settings.timing_buckets_s)
    return None if state in repo.NOT_RELEASED else earlier


def release_key(
    principal_id: int,
    suite: dict[str, Any],
    model: dict[str, Any],
    dataset: dict[str, Any],
    metrics: list[str],
    rows: dict[str, Any] | None,
) -> str:
    """What makes two requests 'the same release': the code, the model as it runs (its inference
    configuration), the data, the metrics and the output read. Seed, ε and resources are
    deliberately left out, so asking again with another seed or ε cannot buy fresh noise to average
    away, and a job's CPU limit cannot change the answer."""
    return digest(
        {
            "principal": principal_id,
            "suite": suite["sha256"],
            "model": [
                model["name"],
                model["version"],
                model["sha256"],
                model.get("inference", {}),
                model.get("output_policy", {"kind": "full"}),
            ],
            "dataset": [dataset["name"], dataset["version"], dataset["sha256"]],
            "metrics": sorted(metrics),
            **({"rows": rows} if rows is not None else {}),
        }
    )


@dataclass(frozen=True)
class Judged:
    """What a job will release and how: the metrics' declarations, the noise plan, the most the values
    can carry, and (rows mode) what the rows are."""

    decls: dict[str, MetricDecl]
    privacy: dict[str, Any]
    metric_bits: float
    rows: dict[str, Any] | None = None


def _metrics_mode(
    req: JobCreate,
    suite: SuiteVersion,
    dataset: DatasetVersion,
    rules: DatasetRules,
    limits: PartnerLimits,
    policy: gate.Policy,
    asks: list[dict[str, Any]] | None = None,
) -> Judged:
    """The suite's code reports the metrics it declares."""
    if req.slices:
        raise errors.InvalidSlice(f"slices are for rows-mode suites; {suite.ref} reports its own metrics")
    declared = suite.metric_decls
    unknown = [m for m in req.metrics if m not in declared]
    if unknown:
        raise errors.UndeclaredMetric(
            f"metrics {unknown} are not declared by suite {suite.ref}", alternatives=list(declared)
        )
    decls = {m: declared[m] for m in sorted(req.metrics)}
    privacy = _privacy(req, rules, limits, gate.noised(decls, policy), policy, asks)
    return Judged(decls, privacy, gate.max_bits(decls, dataset.rows, privacy["epsilon_per_metric"], policy))


def _rows_mode(
    req: JobCreate,
    suite: SuiteVersion,
    contract: Contract,
    output_policy: dict[str, Any],
    dataset: DatasetVersion,
    rules: DatasetRules,
    limits: PartnerLimits,
    policy: gate.Policy,
    asks: list[dict[str, Any]] | None = None,
) -> Judged:
    """The suite's code writes one row per dataset row; the service computes every metric from the
    rows and the labels, all of them noised (the code never sees the labels)."""
    assert suite.rows is not None
    kind = suite.rows["kind"]
    if dataset.task != kind:
        raise ModelDatasetMismatch(f"suite {suite.ref} evaluates {kind}; {dataset.ref} is a {dataset.task} dataset")
    value_range = (
        (float(suite.rows["value_range"][0]), float(suite.rows["value_range"][1]))
        if suite.rows.get("value_range")
        else None
    )
    role: fit.Role
    if kind == "classification":
        use = fit.choose_output(contract, req.output, output_policy)
        output, role, classes = use.output, use.role, dataset.classes
    else:
        output, role, classes = fit.choose_value_output(contract, req.output), "values", 0
    offered = set(suite.rows["offers"])
    gives: Literal["labels", "probabilities", "values"] = (
        "probabilities" if role in ("probabilities", "logits") else "labels" if role == "labels" else "values"
    )
    fits = [m for m in metrics.available(kind, classes, gives) if metrics.family_of(m) in offered]
    for name, predicates in req.slices.items():
        wide = [p.feature for p in predicates if p.feature >= dataset.features]
        if wide:
            raise errors.InvalidSlice(f"slice {name!r} names features {wide}; {dataset.ref} has {dataset.features}")
    chosen = []
    for name in sorted(req.metrics):
        c = metrics.resolve(name, kind, classes, value_range)
        if c is not None and c.slice is not None and c.slice not in req.slices:
            raise errors.InvalidSlice(f"{name} names a slice the job does not define", alternatives=sorted(req.slices))
        if c is None or metrics.family_of(name) not in offered:
            raise errors.UndeclaredMetric(f"suite {suite.ref} offers no metric {name!r} here", alternatives=fits[:40])
        if c.spec.needs == "probabilities" and gives != "probabilities":
            raise errors.MetricNeedsProbabilities(
                f"{name} needs class probabilities; the model output {output!r} gives labels", alternatives=fits[:40]
            )
        chosen.append(c)
    decls = {c.name: c.spec.decl for c in chosen}
    privacy = _privacy(req, rules, limits, sorted(decls) if policy.mechanism else [], policy, asks)
    rows = {
        "kind": kind,
        "output": output,
        "role": role,
        "classes": classes,
        "value_range": list(value_range) if value_range else None,
        "slices": {name: [p.model_dump() for p in predicates] for name, predicates in sorted(req.slices.items())},
        # A built-in suite writes the model's own probabilities: only float rounding is forgiven (unless
        # the model's output policy rounds or cuts them).
        "strict": suite.builtin and output_policy.get("kind", "full") == "full",
    }
    bits = gate.rows_max_bits(chosen, dataset.rows, privacy["epsilon_per_metric"], policy)
    return Judged(decls, privacy, bits, rows)


def _privacy(
    req: JobCreate,
    rules: DatasetRules,
    limits: PartnerLimits,
    noised: list[str],
    policy: gate.Policy,
    asks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    if not noised:
        return {"mechanism": None, "epsilon_per_metric": 0.0, "epsilon_total": 0.0, "noised_metrics": []}
    ceiling = policies.epsilon_ceiling(limits, rules)
    eps = req.epsilon if req.epsilon is not None else min(rules.epsilon_per_metric, ceiling)
    if eps > ceiling and asks is not None:
        asks.append(_ask(ExceptionRule.MAX_EPSILON_PER_METRIC, eps, ceiling))
    elif eps > ceiling:
        raise errors.EpsilonAbovePolicy(
            f"epsilon {eps} per metric is above your policy's {ceiling}",
            alternatives=[f"epsilon <= {ceiling}", ASK_OPERATOR],
        )
    return {
        "mechanism": policy.mechanism,
        "epsilon_per_metric": eps,
        # Rounded up to whole millionths, as budgets count it: never charged less than it spends.
        "epsilon_total": to_micro(eps * len(noised)) / MICRO,
        "noised_metrics": noised,
        "delta": policy.delta if policy.mechanism == "gaussian" else 0.0,
    }


@dataclass(frozen=True)
class Draft:
    """A request judged against the registry, the policies and the gate, before anything is recorded
    or reserved: what the job would be, and the earlier job of the same release if there is one."""

    spec: dict[str, Any]
    key: str
    suite: SuiteVersion
    model_id: int
    dataset_id: int
    plan: Plan
    earlier: Job | None
    asks: list[dict[str, Any]]  # what it asks past its policy, for an operator to grant (request_approval)


def draft(session: Session, settings: Settings, budgets: Budgets, caller: Caller, req: JobCreate) -> Draft:
    """Every check of admission but the budgets, writing nothing; a bad request raises its refusal."""
    # The partner's limits and the dataset's policy as an operator last set them (service.policies):
    # read now, so a change applies from the next admission on.
    sanctions.check(session, settings, caller.principal_id, caller.name)  # a suspended partner: nothing more
    limits = budgets.limits(caller.name, session)
    suite = suites.visible_suite(session, req.suite, caller.principal_id, caller.role)
    model = registry.usable_model(session, req.model)
    dataset = registry.usable_dataset(session, req.dataset)  # a retired one takes no new jobs
    # What the job asks past its partner's policy, when the partner asked for an operator's approval
    # (service.approvals) rather than a refusal.
    asks: list[dict[str, Any]] | None = [] if req.request_approval else None
    if asks is None:
        try:
            policies.check_access(session, caller.name, model, dataset)
        except (policy_errors.ModelNotAllowed, policy_errors.DatasetNotAllowed) as e:
            e.alternatives.append(ASK_OPERATOR)
            raise
    else:
        for kind, ref, allowed in policies.denied_assets(session, caller.name, model, dataset):
            asks.append(_ask(ExceptionRule(kind), ref, allowed))
    rules = policies.dataset_rules(session, settings, dataset.id)
    if len(set(req.metrics)) != len(req.metrics):
        raise errors.UndeclaredMetric(f"metrics {req.metrics} are asked more than once", alternatives=[])
    if dataset.rows < rules.min_dataset_rows:
        raise DatasetTooSmall(
            f"dataset {dataset.ref} has fewer than {rules.min_dataset_rows} rows",
            alternatives=["choose a larger dataset"],
        )
    contract = fit.check(session, settings, model, dataset)  # before anything is reserved
    resources = _resources(req, settings, limits, dataset, asks)
    policy = policies.gate_policy(settings, rules)
    if suite.mode == "rows":
        judged = _rows_mode(req, suite, contract, model.output_policy, dataset, rules, limits, policy, asks)
    else:
        judged = _metrics_mode(req, suite, dataset, rules, limits, policy, asks)
    refs = (
        # The full owner/name@version: what a bare reference meant when it was admitted, for good.
        {
            "ref": suite.ref,
            "owner": suite.namespace,
            "name": suite.name,
            "version": suite.version,
            "sha256": suite.sha256,
        },
        {
            "name": model.name,
            "version": model.version,
            "sha256": model.sha256,
            "inference": model.inference,
            "output_policy": model.output_policy,
        },
        {"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256},
    )
    key = release_key(caller.principal_id, *refs, req.metrics, judged.rows)  # the output policy is in refs
    earlier = _same_release(session, settings, caller, key)  # answered from it: nothing spent
    privacy = judged.privacy
    most = leakage.job_bits(settings, judged.metric_bits)
    if earlier is None and most > settings.release_max_bits:
        raise errors.ReleaseExceedsLeakageCap(
            f"a release of these metrics can carry {most:.1f} bits; one release may carry at most "
            f"{settings.release_max_bits:g}",
            alternatives=["request fewer metrics"],
        )
    spec: dict[str, Any] = {
        "suite": refs[0],
        "model": refs[1],
        "dataset": refs[2],
        "mode": suite.mode,
        "metrics": sorted(req.metrics),
        "declared": {m: d.model_dump(exclude_defaults=True) | {"kind": d.kind} for m, d in judged.decls.items()},
        "rows": judged.rows,
        "privacy": privacy,
        "leakage_bits": round(most, 3),  # the most its ending can carry; charged if it runs
        "resources": resources,
        "seed": req.seed,
        "service_version": __version__,
        # Only in a job admitted past its policy: exactly what an operator must grant before it runs.
        **({"exceptions": asks} if asks else {}),
    }
    plan = Plan(
        dataset_id=dataset.id,
        dataset_ref=dataset.ref,
        epsilon_per_metric=privacy["epsilon_per_metric"],
        epsilon_total=privacy["epsilon_total"],
        noised_metrics=tuple(privacy["noised_metrics"]),
        bits=spec["leakage_bits"],
        rows=int(resources["query_budget"]),
        model_id=model.id,
        caps=lifetime.caps_for(settings, caller.principal_id, dataset, model),
    )
    return Draft(spec, key, suite, model.id, dataset.id, plan, earlier, asks or [])


def submit(session: Session, settings: Settings, budgets: Budgets, caller: Caller, req: JobCreate) -> tuple[Job, bool]:
    """Record an admitted job, or return the partner's earlier job for the same release (True)."""
    d = draft(session, settings, budgets, caller, req)
    if d.earlier is not None:
        ledger.append(
            session,
            actor=caller.actor,
            action="job.reused",
            subject=f"job:{d.earlier.id}",
            data={"release_key": d.key},
        )
        return d.earlier, True
    _no_twin_job_unfinished(session, caller)
    job = record_submitted(
        session,
        job_id=str(uuid.uuid4()),
        principal_id=caller.principal_id,
        spec=d.spec,
        release_key=d.key,
        suite_version_id=d.suite.id,
        model_version_id=d.model_id,
        dataset_version_id=d.dataset_id,
        actor=caller.actor,
        data={"spec": d.spec},
    )
    budgets.reserve(session, Partner(caller.principal_id, caller.name), job.id, d.plan)
    if d.asks:
        approvals.open_exception(session, job, caller.actor, d.asks, req.approval_note)
    waits = d.asks or not d.suite.approved
    transition(session, job, JobState.AWAITING_APPROVAL if waits else JobState.QUEUED, actor="admission")
    return job, False


def _no_twin_job_unfinished(session: Session, caller: Caller) -> None:
    """A real job never runs beside a twin job of its partner (errors.RealJobInProgress says why)."""
    twin = repo.unfinished_twin_job(session, caller.principal_id)
    if twin is not None:
        raise errors.TwinJobInProgress(
            f"your twin job {twin.id} has not ended; a real job waits until it has",
            alternatives=["retry when it has ended", f"cancel it: POST /v1/jobs/{twin.id}/cancel"],
        )


def preview(session: Session, settings: Settings, budgets: Budgets, caller: Caller, req: JobCreate) -> JobPreview:
    """A dry run: what the job would spend and leave, and whether it would be admitted now (if not,
    the refusal a submission would get). Nothing is recorded, reserved or counted; the caller rolls
    back. A bad request raises the refusal its submission would."""
    d = draft(session, settings, budgets, caller, req)
    privacy = d.spec["privacy"]
    cost = JobCost(
        epsilon_per_metric=privacy["epsilon_per_metric"],
        epsilon_total=privacy["epsilon_total"],
        noised_metrics=list(privacy["noised_metrics"]),
        leakage_bits=d.spec["leakage_bits"],
        model_rows=d.plan.rows,
        model_rows_granted=0,
    )
    if d.earlier is not None:  # answered from the earlier job: nothing would be spent
        return JobPreview(admitted=True, reuses=d.earlier.id, cost=cost.model_copy(update=_NOTHING), left=None)
    try:  # as in submit: before the budgets, so the same refusal comes first
        _no_twin_job_unfinished(session, caller)
    except errors.TwinJobInProgress as e:
        return JobPreview(admitted=False, cost=cost, left=None, refusal=Refusal(**e.to_dict()))
    seen = budgets.preview(session, Partner(caller.principal_id, caller.name), d.plan)
    return JobPreview(
        admitted=seen.refusal is None,
        state=None
        if seen.refusal
        else JobState.AWAITING_APPROVAL
        if d.asks or not d.suite.approved
        else JobState.QUEUED,
        cost=cost.model_copy(update={"model_rows_granted": seen.rows_granted}),
        left=seen.left,
        refusal=None if seen.refusal is None else Refusal(**seen.refusal.to_dict()),
    )


_NOTHING = {"epsilon_total": 0.0, "leakage_bits": 0.0, "model_rows": 0, "model_rows_granted": 0}


def admit(
    session: Session, settings: Settings, budgets: Budgets, dispatcher: Dispatcher, caller: Caller, req: JobCreate
) -> tuple[Job, bool]:
    """A submission from start to end, for the API and the site alike: admitted under the partner's
    admission lock, committed, then handed to a worker; or refused, with nothing of it kept but the
    refusal on the audit log (then the refusal is raised)."""
    try:
        with budgets.admission(caller.principal_id):  # held until committed: counts stay exact
            job, reused = submit(session, settings, budgets, caller, req)
            commit_then_enqueue(session, dispatcher, [job.id] if not reused and job.state == JobState.QUEUED else [])
    except EvalgateError as e:
        session.rollback()  # nothing of the refused job stays; the refusal itself is recorded
        record_refusal(session, settings, caller, e.code, req)
        session.commit()
        raise
    return job, reused


def record_refusal(session: Session, settings: Settings, caller: Caller, code: str | None, req: JobCreate) -> None:
    """Refusals are decisions too. Called on a session whose admission rolled back; the caller commits.
    A refusal for an exhausted budget is a hard-rule trip, and may suspend the partner (service.sanctions)."""
    sanctions.record_refusal(session, settings, caller.principal_id, caller.name, code)
    ledger.append(
        session,
        actor=caller.actor,
        action=REFUSED,
        subject=f"principal:{caller.name}",
        data={
            "reason": code,
            "suite": req.suite,
            "model": req.model,
            "dataset": req.dataset,
            "metrics": sorted(req.metrics),
        },
    )


def refusals_since(session: Session, since: datetime) -> Counter[str]:
    """Submissions refused at admission since `since`, per partner name (operators)."""
    return Counter(e["subject"].removeprefix("principal:") for e in ledger.recent(session, REFUSED, since))
