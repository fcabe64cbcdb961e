"""From "the sandbox stopped" to "released, signed, recorded": how a job ends.

The runner hands `conclude` the sandbox's outcome and what the job was admitted with (a `Case`:
nothing the job itself chose), and gets back the job's ending: no error class (released) or the one
error class the partner will be told. Here, in order:

1. what the sandbox saw: cancelled, timed out, out of memory, crashed or out of model queries end
   the job with that class;
2. the result file: missing, or refused by the sandbox (a link, a FIFO, too large);
3. the release gate (gate.py): parse and type the result, withhold small cells, add the admitted
   noise plan's noise, round;
4. the release: signed (and a DSSE-signed in-toto statement of it), on the transparency log and the
   ledger, stored at most once per job, with the HMAC of its raw (pre-noise) result (raw.py), which a
   later reproduction compares with its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from service import __version__
from service.config import Settings
from service.db import utcnow
from service.inference.contract import Exit
from service.ledger import service as ledger
from service.policies import service as policies
from service.registry import repository as registry_repo
from service.registry.models import DatasetVersion, ModelVersion
from service.release import gate, metrics, raw, timing
from service.release import repository as repo
from service.release.catalogue import MetricDecl
from service.release.models import Result
from service.release.outcomes import ErrorClass
from service.release.signing import Signer
from service.sandbox.reading import NO_RESULT
from service.sandbox.spec import Outcome
from service.transparency import dsse
from service.transparency import service as tlog
from service.transparency import statement as attestation


@dataclass(frozen=True)
class Case:
    """What the gate knows of a job besides its outcome: all of it fixed at admission."""

    job_id: str
    spec: dict[str, Any]
    spec_sha256: str
    dataset_rows: int
    submitted_at: datetime
    runtime: str  # the sandbox runtime family it ran under
    truth: metrics.Truth | None = None  # rows mode: the dataset's labels
    features: np.ndarray | None = None  # rows mode with slices: the dataset's features


@dataclass(frozen=True)
class Ending:
    error_class: ErrorClass | None  # None: released
    note: str = ""  # for operators only


def classify(outcome: Outcome) -> ErrorClass | None:
    """The error class the sandbox's own facts give, before the gate looks at the result."""
    if outcome.cancelled:
        return ErrorClass.CANCELLED
    if not outcome.partner_code_ran:  # the model never came up (or the job never started): not the job's doing
        return ErrorClass.INTERNAL_ERROR
    if outcome.sidecar_died or outcome.sidecar_oom:  # a job cannot bring its sidecar down: not its doing
        return ErrorClass.INTERNAL_ERROR
    if outcome.timed_out:
        return ErrorClass.TIMEOUT
    if outcome.oom or outcome.exit_code == Exit.MEMORY:
        return ErrorClass.OOM
    if outcome.exit_code != Exit.OK:
        if outcome.exit_code == Exit.BUDGET or outcome.usage.get("budget_exceeded"):
            return ErrorClass.QUERY_BUDGET_EXCEEDED
        return ErrorClass.CRASHED
    if outcome.result is None:
        # No file at all, or one the sandbox refused to read (link, FIFO, directory, over the cap).
        return ErrorClass.MISSING_OUTPUT if outcome.result_problem == NO_RESULT else ErrorClass.OUTPUT_REJECTED
    return None


@dataclass(frozen=True)
class Judgement:
    """The gate's verdict on a finished sandbox run (steps 1-3): an error class and why (for
    operators; on a twin, for its partner too), or what it would release."""

    error_class: ErrorClass | None
    note: str = ""
    gated: gate.Release | None = None
    pre_noise: dict[str, Any] | None = None
    policy: gate.Policy | None = None


def judge(session: Session, settings: Settings, case: Case, outcome: Outcome) -> Judgement:
    """Steps 1-3, releasing nothing: for a job, what `conclude` then releases; for a twin job
    (service.jobs.twin), the verdict its partner is shown."""
    error_class = classify(outcome)
    if error_class is not None:
        note = "" if outcome.partner_code_ran else "the sidecar never served the model (see its output above)"
        if outcome.partner_code_ran and (outcome.sidecar_died or outcome.sidecar_oom):
            note = "the sidecar stopped while the job ran (see its output above)"
        return Judgement(error_class, note)
    assert outcome.result is not None
    privacy = case.spec["privacy"]  # the plan admitted is the plan applied, whatever the settings now
    # The dataset's suppression thresholds as its operator set them now (service.policies); the noise
    # is the plan admitted, whatever the policy or the settings say now.
    rules = policies.dataset_rules_of(session, settings, case.spec["dataset"]["name"], case.spec["dataset"]["version"])
    policy = replace(
        policies.gate_policy(settings, rules), mechanism=privacy["mechanism"], delta=privacy.get("delta") or 0.0
    )
    if case.spec.get("mode") == "rows":
        try:
            read = _read_rows(case, outcome.result)
            gated = _gate_rows(case, read, privacy["epsilon_per_metric"], policy)
            pre_noise = _raw_rows(case, read)
        except metrics.RowsRejected as e:
            # A built-in suite writes the model's own output: then the model broke its registered
            # contract (the operator's to fix), not the job.
            builtin = bool(case.spec["rows"].get("strict"))
            return Judgement(ErrorClass.INTERNAL_ERROR if builtin else ErrorClass.OUTPUT_REJECTED, f"[rows] {e.reason}")
    else:
        decls = {name: MetricDecl.model_validate(d) for name, d in case.spec["declared"].items()}
        try:
            reported = gate.parse_result(
                outcome.result,
                decls,
                dataset_rows=case.dataset_rows,
                max_bytes=settings.result_max_bytes,
                max_metrics=settings.max_metrics,
            )
        except gate.OutputRejected as e:
            return Judgement(ErrorClass.OUTPUT_REJECTED, f"[gate] {e.reason}")
        pre_noise = _raw_reported(reported)
        gated = gate.release(
            reported,
            decls,
            epsilon=privacy["epsilon_per_metric"],
            policy=policy,
            noised_metrics=privacy["noised_metrics"],
            dataset_rows=case.dataset_rows,
        )
    return Judgement(None, gated=gated, pre_noise=pre_noise, policy=policy)


def conclude(session: Session, signer: Signer, settings: Settings, case: Case, outcome: Outcome) -> Ending:
    """Judge a finished sandbox run, and release its result if it passes (step 4)."""
    judged = judge(session, settings, case, outcome)
    if judged.error_class is not None:
        return Ending(judged.error_class, judged.note)
    gated, pre_noise, policy = judged.gated, judged.pre_noise, judged.policy
    assert gated is not None and pre_noise is not None and policy is not None
    privacy = case.spec["privacy"]
    # How many rows the job queried is its own choice: kept for operators (the job's outcome), never
    # in what a partner reads.
    provenance = {
        "spec_sha256": case.spec_sha256,
        "suite": case.spec["suite"],
        "model": case.spec["model"],
        "dataset": case.spec["dataset"],
        "mode": case.spec.get("mode", "metrics"),
        "rows": case.spec.get("rows"),
        "images": outcome.images,
        "runtime": case.runtime,
        # As the sidecar reported it: the onnxruntime it really ran, with the configuration fixed
        # for the model version.
        "inference": outcome.usage.get("inference"),
        "service_version": __version__,
        "seed": case.spec["seed"],
        "submitted_at": case.submitted_at.isoformat(),
        # Padded, as the partner sees it: the real run time would be a side channel.
        "completed_within_s": timing.padded_duration(
            (utcnow() - case.submitted_at).total_seconds(), settings.timing_buckets_s
        ),
    }
    # The license terms of the model and dataset versions as they are now (registry.lifecycle), signed
    # with the release; none set: the provenance is as it was before terms existed.
    licenses = license_terms(session, case.spec)
    if licenses:
        provenance["licenses"] = licenses
    # What the gate applied, for the attestation: fixed at admission or by the operator.
    facts = {
        "metric_kinds": {name: d.get("kind") for name, d in (case.spec.get("declared") or {}).items()},
        "gate_policy": {
            "decimals": policy.decimals,
            "min_rows": policy.min_rows,
            "min_class_rows": policy.min_class_rows,
            "mechanism": policy.mechanism,
            "noised_kinds": sorted(policy.noised_kinds),
            "delta": policy.delta,
        },
        "epsilon_spent": privacy.get("epsilon_total", 0.0),
    }
    release(
        session,
        signer,
        job_id=case.job_id,
        metrics=gated.metrics,
        disclosure=gated.disclosure(case.spec["leakage_bits"]),
        provenance=provenance,
        actor="worker",
        facts=facts,
        raw_hmac=raw.digest(raw.secret(settings.data_dir), case.job_id, pre_noise),
    )
    return Ending(None)


@dataclass(frozen=True)
class RowsRead:
    """A rows-mode job's rows file, read and checked, with the metrics and slices asked for."""

    rows: metrics.Rows
    chosen: list[metrics.Chosen]
    slices: dict[str, np.ndarray]


def _read_rows(case: Case, result: bytes) -> RowsRead:
    assert case.truth is not None
    rows_spec = case.spec["rows"]
    n, classes = case.truth.n, int(rows_spec["classes"])
    value_range = tuple(rows_spec["value_range"]) if rows_spec.get("value_range") else None
    bound = n * max(classes, 1) * 8 + (64 << 10)
    arrays = metrics.load_rows_file(result, bound)
    rows = metrics.read_rows(
        arrays, rows_spec["kind"], n, classes, strict=bool(rows_spec.get("strict")), value_range=value_range
    )
    chosen = [metrics.resolve(name, rows_spec["kind"], classes, value_range) for name in case.spec["metrics"]]
    if any(c is None for c in chosen):  # admission checked them; a spec that changed is a bug
        raise metrics.RowsRejected(f"metrics {case.spec['metrics']} are not all in the catalogue")
    slices = {
        name: metrics.slice_mask(case.features, predicates)
        for name, predicates in (rows_spec.get("slices") or {}).items()
        if case.features is not None
    }
    return RowsRead(rows, [c for c in chosen if c is not None], slices)


def license_terms(session: Session, spec: dict[str, Any]) -> dict[str, Any]:
    """{"model": terms, "dataset": terms} of a job's versions, for those whose terms are set."""
    found: dict[str, Any] = {}
    model = registry_repo.by_name_version(session, ModelVersion, spec["model"]["name"], spec["model"]["version"])
    if model is not None and model.license:
        found["model"] = model.license
    dataset = registry_repo.by_name_version(
        session, DatasetVersion, spec["dataset"]["name"], spec["dataset"]["version"]
    )
    if dataset is not None and dataset.license:
        found["dataset"] = dataset.license
    return found


def _gate_rows(case: Case, read: RowsRead, epsilon: float, policy: gate.Policy) -> gate.Release:
    """Rows mode: compute, noise and round every metric here, from the job's rows."""
    assert case.truth is not None
    return gate.release_rows(read.rows, case.truth, read.chosen, epsilon=epsilon, policy=policy, slices=read.slices)


def _raw_rows(case: Case, read: RowsRead) -> dict[str, Any]:
    """Each metric's statistic before noise (raw.py), computed as the gate computes it."""
    assert case.truth is not None
    out: dict[str, Any] = {}
    for c in read.chosen:
        rows, truth = read.rows, case.truth
        if c.slice is not None:
            rows, truth = metrics.restrict(rows, truth, read.slices[c.slice])
        out[c.name] = raw.statistic(c.spec.compute(rows, truth, c.index))
    return out


def _raw_reported(reported: dict[str, gate.Reported]) -> dict[str, Any]:
    return {name: [raw.number(r.value), r.n, r.min_class_n] for name, r in reported.items()}


def raw_result(settings: Settings, case: Case, outcome: Outcome) -> dict[str, Any]:
    """The raw (pre-noise) result of a run whose sandbox ended well (classify gave no error class),
    as the gate would have read it; raises metrics.RowsRejected or gate.OutputRejected as it would."""
    assert outcome.result is not None
    if case.spec.get("mode") == "rows":
        return _raw_rows(case, _read_rows(case, outcome.result))
    decls = {name: MetricDecl.model_validate(d) for name, d in case.spec["declared"].items()}
    reported = gate.parse_result(
        outcome.result,
        decls,
        dataset_rows=case.dataset_rows,
        max_bytes=settings.result_max_bytes,
        max_metrics=settings.max_metrics,
    )
    return _raw_reported(reported)


def statement(
    job_id: str, metrics: dict[str, Any], disclosure: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """The exact object an attestation signs."""
    return {"job_id": job_id, "metrics": metrics, "disclosure": disclosure, "provenance": provenance}


def existing(session: Session, job_id: str) -> Result | None:
    """The job's release, if it has one."""
    return repo.result_of(session, job_id)


def for_jobs(session: Session, job_ids: list[str]) -> dict[str, Result]:
    """The releases of many jobs, by job id."""
    return repo.results_of(session, job_ids)


def release(
    session: Session,
    signer: Signer,
    *,
    job_id: str,
    metrics: dict[str, Any],
    disclosure: dict[str, Any],
    provenance: dict[str, Any],
    actor: str,
    facts: dict[str, Any] | None = None,
    raw_hmac: str | None = None,
) -> Result:
    """Sign and record a release, at most once per job (the unique job_id makes a second impossible):
    its DSSE-signed in-toto statement goes on the transparency log in this same transaction, so a
    release rolled back leaves no leaf."""
    found = existing(session, job_id)
    if found is not None:
        return found
    signature = signer.sign(statement(job_id, metrics, disclosure, provenance))
    attested = attestation.release_statement(job_id, metrics, disclosure, provenance, facts or {})
    envelope = dsse.seal(attested, signer.key_id, signer.sign_bytes)
    leaf_index = tlog.append(session, attestation.RELEASE, attestation.release_leaf(envelope))
    event = ledger.append(
        session,
        actor=actor,
        action="result.released",
        subject=f"job:{job_id}",
        data={
            "metrics": metrics,
            "disclosure": disclosure,
            "spec_sha256": provenance["spec_sha256"],
            "signature": signature,
            "key_id": signer.key_id,
            "leaf_index": leaf_index,
        },
    )
    result = Result(
        job_id=job_id,
        metrics=metrics,
        disclosure=disclosure,
        provenance=provenance,
        signature=signature,
        key_id=signer.key_id,
        ledger_seq=event.seq,
        envelope=envelope,
        leaf_index=leaf_index,
        raw_hmac=raw_hmac,
    )
    session.add(result)
    session.flush()
    return result
