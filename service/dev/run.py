"""`evalgate dev run`: a suite on the partner's own machine, against a dataset's twin and a model's
stand-in, in the same job image and sandbox as a real job (service.sandbox, from plain arguments),
then through the same release gate code (service.release.gate).

Nothing here is hidden from the partner: the job's output (stdout, stderr, a traceback), the
sidecar's count of its use, the gate's reason for a refusal. Nothing private is involved: the twin
and the stand-in are what GET …/twin gives any partner allowed to use the originals.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from service.config import Settings
from service.inference.contract import JOB_USER, RESULT_NAME, ROWS_NAME, Env
from service.inference.model_info import Contract, describe_model
from service.quotas import leakage
from service.registry import bundles, datasets, fit, manifest
from service.release import gate, metrics
from service.release.catalogue import MetricDecl
from service.release.outcomes import ErrorClass
from service.sandbox.runner import Sandbox
from service.sandbox.runtimes import Runtime
from service.sandbox.spec import JobSandbox, Limits, Outcome


class DevExit(IntEnum):
    """`evalgate dev run`'s exit codes."""

    RELEASED = 0  # the gate would release the result
    REJECTED = 1  # the gate would reject the result (its reason is shown)
    SETUP = 2  # nothing ran: a bad suite, options, twin or stand-in, no Docker, no images
    FAILED = 3  # the job ended without a result: crashed, timed out, out of memory, over its query budget


class DevError(Exception):
    """Nothing could run; the message says what to change."""


@dataclass(frozen=True)
class Assets:
    """The twin, the stand-in, and what the real job would be judged by."""

    dataset: Path  # the twin (.npz with x and y)
    model: Path  # the stand-in (.onnx)
    dataset_rows: int  # the real dataset's rows (its public size), which a real job's noise and bits use
    output_policy: dict[str, Any] = field(default_factory=lambda: {"kind": "full"})
    threads: int = 1
    contract: dict[str, Any] | None = None  # the real model's, as registration learned it (else the stand-in's)
    notes: tuple[str, ...] = ()


@dataclass
class Plan:
    """What the job is, as admission would fix it."""

    mode: str
    decls: dict[str, MetricDecl]
    env: dict[str, str]
    result_name: str
    job_dataset: Path  # what the job container is given: the twin, or its features only (rows mode)
    rows: dict[str, Any] | None = None
    chosen: list[metrics.Chosen] = field(default_factory=list)
    score_outputs: tuple[str, ...] = ()


@dataclass
class DevResult:
    exit: DevExit
    outcome: Outcome | None = None
    error_class: ErrorClass | None = None
    rejected: str | None = None
    release: gate.Release | None = None
    epsilon_per_metric: float = 0.0
    epsilon_total: float = 0.0
    noised: list[str] = field(default_factory=list)
    bits: float = 0.0
    lines: list[str] = field(default_factory=list)  # what to tell the partner, in order


def load_suite(src: Path, settings: Settings, root: Path) -> bundles.Bundle:
    """The suite directory packed and extracted exactly as an upload would be (same checks, same limits)."""
    from service.registry.service import bundle_limits

    if not (src / manifest.MANIFEST).is_file():
        raise DevError(f"{src} has no {manifest.MANIFEST}: run `evalgate dev init NAME` for a skeleton")
    return bundles.extract_bundle(bundles.pack_directory(src), root, bundle_limits(settings))


def plan(
    bundle: bundles.Bundle, assets: Assets, requested: list[str], contract: Contract, work: Path, output: str | None
) -> Plan:
    """The job's metrics, noise plan and environment, as admission would fix them on the twin."""
    m = bundle.manifest
    found = datasets.inspect_dataset(assets.dataset, min_rows=1, allow_nan=True)
    env: dict[str, str] = {}
    if m.mode == "metrics":
        names = requested or sorted(m.metrics)
        unknown = [n for n in names if n not in m.metrics]
        if unknown:
            raise DevError(f"metrics {unknown} are not declared by the suite; it declares {sorted(m.metrics)}")
        return Plan("metrics", {n: m.metrics[n] for n in sorted(names)}, env, RESULT_NAME, assets.dataset)
    assert m.rows is not None
    kind = m.rows.kind
    if found.task != kind:
        raise DevError(f"the suite evaluates {kind}; the twin is a {found.task} dataset")
    if kind == "classification":
        use = fit.choose_output(contract, output, assets.output_policy)
        out, role, classes = use.output, use.role, found.classes
    else:
        out, role, classes = fit.choose_value_output(contract, output), "values", 0
    value_range = tuple(m.rows.value_range) if m.rows.value_range else None
    names = requested or (["accuracy"] if kind == "classification" else ["mae"])
    chosen = []
    for name in sorted(names):
        c = metrics.resolve(name, kind, classes, value_range)  # type: ignore[arg-type]
        if c is None or metrics.family_of(name) not in m.rows.offered() or c.slice is not None:
            gives = (
                "probabilities" if role in ("probabilities", "logits") else "labels" if role == "labels" else "values"
            )
            fits = metrics.available(kind, classes, gives)  # type: ignore[arg-type]
            raise DevError(f"the suite offers no metric {name!r} here; it offers {', '.join(fits[:40])}")
        if c.spec.needs == "probabilities" and role not in ("probabilities", "logits"):
            raise DevError(f"{name} needs class probabilities; the model output {out!r} gives {role}")
        chosen.append(c)
    features = work / "features.npz"
    _features_only(assets.dataset, features)  # the job is given the features only, as a real one
    env |= {Env.ROWS: kind, Env.MODEL_OUTPUT: out, Env.OUTPUT_ROLE: role, Env.CLASSES: str(classes)}
    rows = {
        "kind": kind,
        "output": out,
        "role": role,
        "classes": classes,
        "value_range": list(value_range) if value_range else None,
        "strict": False,
    }
    decls = {c.name: c.spec.decl for c in chosen}
    return Plan("rows", decls, env, ROWS_NAME, features, rows, chosen, tuple(contract.scores))


def _features_only(dataset: Path, dest: Path) -> None:
    with dest.open("wb") as f:
        np.savez(f, x=datasets.features(dataset))
    dest.chmod(0o444)


def limits(settings: Settings, dataset_rows: int, plan: Plan, classes: int) -> Limits:
    """The sandbox limits a real job gets with the default resources (service.jobs.runner)."""
    from service.jobs.runner import rows_file_bound, sandbox_limits

    result_max, output_bytes = settings.result_max_bytes, settings.output_dir_bytes
    if plan.mode == "rows":
        result_max = rows_file_bound(dataset_rows, classes)
        output_bytes = max(output_bytes, result_max + (1 << 20))
    defaults = {"memory_mb": settings.default_memory_mb, "cpus": settings.default_cpus}
    return sandbox_limits(settings, defaults | {"timeout_s": settings.default_timeout_s}, result_max, output_bytes)


def run_suite(
    settings: Settings,
    sandbox: Sandbox,
    runtime: Runtime,
    suite: Path,
    assets: Assets,
    *,
    requested: list[str],
    epsilon: float | None = None,
    output: str | None = None,
    seed: int = 0,
) -> DevResult:
    """Run the suite on the twin beside the stand-in, and judge its result as the gate would."""
    work = Path(tempfile.mkdtemp(prefix="evalgate-dev-"))
    work.chmod(0o755)  # the containers' users read the files bind-mounted from here
    job_id = f"dev-{uuid.uuid4()}"
    try:
        bundle = load_suite(suite, settings, work / "suites")
        _, learned, _ = describe_model(assets.model, assets.threads)
        contract = Contract(**assets.contract) if assets.contract else learned
        p = plan(bundle, assets, requested, contract, work, output)
        found = datasets.inspect_dataset(assets.dataset, min_rows=1, allow_nan=True)
        spec = JobSandbox(
            job_id=job_id,
            job_image=sandbox.image_id(settings.job_image),
            sidecar_image=sandbox.image_id(settings.sidecar_image),
            model_path=assets.model,
            dataset_path=p.job_dataset,
            suite_path=bundle.path,
            entrypoint=bundle.manifest.entrypoint,
            env={Env.SEED: str(seed), Env.METRICS: ",".join(sorted(p.decls)), **p.env},
            query_budget_rows=settings.default_query_budget or found.rows,
            limits=limits(settings, found.rows, p, found.classes),
            runtime=runtime,
            result_name=p.result_name,
            sidecar_threads=assets.threads,
            output_policy=assets.output_policy,
            score_outputs=p.score_outputs,
            job_user=JOB_USER,
        )
        outcome = sandbox.run(spec)
        return judge(settings, p, outcome, assets, found, epsilon)
    finally:
        sandbox.remove(job_id)
        shutil.rmtree(work, ignore_errors=True)


def judge(
    settings: Settings, p: Plan, outcome: Outcome, assets: Assets, found: datasets.Inspected, epsilon: float | None
) -> DevResult:
    """The error class the real job would end with, or the gate's verdict on its result."""
    from service.jobs.runner import rows_file_bound
    from service.release.service import classify

    policy = gate.Policy.from_settings(settings)
    eps = epsilon if epsilon is not None else settings.dp_epsilon_per_metric
    noised = (sorted(p.decls) if policy.mechanism else []) if p.mode == "rows" else gate.noised(p.decls, policy)
    eps = eps if noised else 0.0
    if p.mode == "rows":
        bits = gate.rows_max_bits(p.chosen, assets.dataset_rows, eps, policy)
    else:
        bits = gate.max_bits(p.decls, assets.dataset_rows, eps, policy)
    result = DevResult(
        DevExit.RELEASED,
        outcome=outcome,
        epsilon_per_metric=eps,
        epsilon_total=round(eps * len(noised), 6),
        noised=noised,
        bits=leakage.job_bits(settings, bits),
    )
    result.error_class = classify(outcome)
    if result.error_class is not None:
        result.exit = DevExit.FAILED
        return result
    assert outcome.result is not None
    try:
        if p.mode == "rows":
            assert p.rows is not None
            y = datasets.labels(assets.dataset)
            truth = metrics.Truth(y, found.classes)
            arrays = metrics.load_rows_file(outcome.result, rows_file_bound(len(y), p.rows["classes"]))
            value_range = tuple(p.rows["value_range"]) if p.rows["value_range"] else None
            rows = metrics.read_rows(
                arrays,
                p.rows["kind"],
                len(y),
                p.rows["classes"],
                strict=False,
                value_range=value_range,
            )
            result.release = gate.release_rows(rows, truth, p.chosen, epsilon=eps, policy=policy)
        else:
            reported = gate.parse_result(
                outcome.result,
                p.decls,
                dataset_rows=found.rows,
                max_bytes=settings.result_max_bytes,
                max_metrics=settings.max_metrics,
            )
            result.release = gate.release(
                reported, p.decls, epsilon=eps, policy=policy, noised_metrics=noised, dataset_rows=found.rows
            )
    except (gate.OutputRejected, metrics.RowsRejected) as e:
        result.exit, result.rejected = DevExit.REJECTED, e.reason
    return result
