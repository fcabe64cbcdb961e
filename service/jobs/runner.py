"""Running a job on a worker: queued → running → gating → released | rejected | failed | cancelled.

Safe to call again for the same job at any point (Celery redelivery, worker restart): it re-reads
the job, returns if it has ended, and the sandbox resumes the containers an earlier attempt left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session, sessionmaker

from service import __version__
from service.config import Settings
from service.db import session_scope, utcnow
from service.jobs.models import Job
from service.jobs.states import TERMINAL, transition
from service.ledger import service as ledger
from service.quotas import leakage
from service.quotas.store import DailyQuota, today
from service.registry import storage
from service.release import gate, timing
from service.release import service as release_service
from service.release.catalogue import MetricDecl
from service.release.signing import Signer
from service.sandbox.errors import SandboxError
from service.sandbox.images import resolve_image_id
from service.sandbox.runner import EXIT_BUDGET, NO_RESULT, JobSandbox, Limits, Outcome, Sandbox
from service.sandbox.runtimes import Runtime

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
ACTOR = "worker"


@dataclass
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    sandbox: Sandbox
    signer: Signer
    runtime: Runtime
    quota: DailyQuota  # model rows per day
    bits: DailyQuota  # leakage per day, in millibits


def _sandbox_spec(ctx: WorkerContext, job: Job, rows: int) -> JobSandbox:
    s = ctx.settings
    res = job.spec["resources"]
    client = ctx.sandbox.client
    return JobSandbox(
        job_id=job.id,
        job_image=resolve_image_id(client, s.job_image),
        sidecar_image=resolve_image_id(client, s.sidecar_image),
        model_path=storage.blob_path(s.data_dir, job.model.sha256),
        dataset_path=storage.blob_path(s.data_dir, job.dataset.sha256),
        suite_path=storage.suite_dir(s.data_dir, job.suite.sha256),
        entrypoint=job.suite.entrypoint,
        env={"EVALGATE_SEED": str(job.spec["seed"]), "EVALGATE_METRICS": ",".join(job.spec["metrics"])},
        query_budget_rows=rows,
        limits=Limits(
            memory_mb=res["memory_mb"],
            cpus=res["cpus"],
            timeout_s=res["timeout_s"],
            pids=s.pids_limit,
            tmp_mb=s.tmp_size_mb,
            output_bytes=s.output_dir_bytes,
            output_inodes=s.output_dir_inodes,
            log_cap_bytes=s.log_cap_bytes,
            sidecar_memory_mb=s.sidecar_memory_mb,
            result_max_bytes=s.result_max_bytes,
            max_requests=s.max_requests_per_job,
            max_batch_rows=s.max_batch_rows,
            max_requests_per_s=s.max_requests_per_s,
        ),
        runtime=ctx.runtime,
    )


def _claim(ctx: WorkerContext, job_id: str) -> tuple[int, int, int] | str | None:
    """Move the job to running. Returns (principal id, rows wanted, daily cap), or the state to report
    when there is nothing to run."""
    with session_scope(ctx.sessions) as s:
        job = s.get(Job, job_id)
        if job is None:
            log.warning("job %s does not exist", job_id)
            return None
        if job.state in TERMINAL or job.state in ("submitted", "awaiting_approval"):
            return job.state
        if job.state == "gating":  # a crash inside the release transaction; its outcome is gone
            transition(s, job, "failed", actor=ACTOR, error_class="internal_error")
            return job.state
        if job.cancel_requested:
            transition(s, job, "cancelled", actor=ACTOR, error_class="cancelled")
            return job.state
        job.attempts += 1
        if job.attempts > MAX_ATTEMPTS:
            transition(s, job, "failed", actor=ACTOR, error_class="internal_error")
            job.operator_log = f"gave up after {MAX_ATTEMPTS} attempts"
            return job.state
        transition(s, job, "running", actor=ACTOR, data={"attempt": job.attempts})
        cap = ctx.settings.partner_limit(job.principal.name, "rows_per_day")
        return job.principal_id, int(job.spec["resources"]["query_budget"]), cap


def _start(ctx: WorkerContext, job_id: str) -> JobSandbox | str | None:
    """Claim the job, reserve its model rows for today, and describe its sandbox."""
    claimed = _claim(ctx, job_id)
    if not isinstance(claimed, tuple):
        return claimed
    principal_id, want, cap = claimed
    # Outside any open transaction: the SQL quota store writes in its own.
    granted = ctx.quota.reserve(principal_id, job_id, want, cap)
    with session_scope(ctx.sessions) as s:
        job = s.get(Job, job_id)
        ledger.append(
            s,
            actor=ACTOR,
            action="quota.rows_reserved",
            subject=f"job:{job_id}",
            data={"wanted": want, "granted": granted, "day": today(), "rows_per_day": cap},
        )
        if granted <= 0:
            job.operator_log = "the partner's model rows for today were spent before the job started"
            transition(s, job, "failed", actor=ACTOR, error_class="query_budget_exceeded")
            return job.state
        try:
            return _sandbox_spec(ctx, job, granted)
        except SandboxError as e:
            job.operator_log = str(e)
            transition(s, job, "failed", actor=ACTOR, error_class="internal_error")
            return job.state


def _cancel_requested(ctx: WorkerContext, job_id: str) -> bool:
    with session_scope(ctx.sessions) as s:
        job = s.get(Job, job_id)
        return job is None or job.cancel_requested


def classify(outcome: Outcome) -> tuple[str, str | None]:
    """(state, error class) from what the sandbox saw, before the gate. 'gating' means: go on to the gate."""
    if outcome.cancelled:
        return "cancelled", "cancelled"
    if outcome.timed_out:
        return "failed", "timeout"
    if outcome.oom:
        return "failed", "oom"
    if outcome.exit_code != 0:
        if outcome.exit_code == EXIT_BUDGET or outcome.usage.get("budget_exceeded"):
            return "failed", "query_budget_exceeded"
        return "failed", "crashed"
    return "gating", None


def _settle(ctx: WorkerContext, job_id: str, rows_used: int | None) -> None:
    """Give back the reserved rows the job did not use (none when its use is unknown)."""
    if rows_used is None:
        return  # sandbox failure: usage unknown, so the whole reservation stays spent
    refund = ctx.quota.settle(job_id, rows_used)
    if refund is not None:
        with session_scope(ctx.sessions) as s:
            ledger.append(
                s,
                actor=ACTOR,
                action="quota.rows_settled",
                subject=f"job:{job_id}",
                data={"used": rows_used, "refunded": refund},
            )


def _finish(ctx: WorkerContext, job_id: str, outcome: Outcome) -> str:
    settings = ctx.settings
    usage = {"rows": int(outcome.usage.get("rows", 0)), "requests": int(outcome.usage.get("requests", 0))}
    # A sidecar that printed no usage is counted as having spent its whole reservation.
    _settle(ctx, job_id, usage["rows"] if outcome.usage else None)
    with session_scope(ctx.sessions) as s:
        job = s.get(Job, job_id)
        if job.state in TERMINAL:
            return job.state
        job.operator_log = _operator_log(outcome)
        state, error_class = classify(outcome)
        if state != "gating":
            transition(s, job, state, actor=ACTOR, error_class=error_class, data={"queries": usage})
            return state
        transition(s, job, "gating", actor=ACTOR, data={"queries": usage})
        if outcome.result is None:
            # No file at all, or one the sandbox refused to read (link, FIFO, directory, over the cap).
            missing = outcome.result_problem == NO_RESULT
            transition(s, job, "rejected", actor=ACTOR, error_class="missing_output" if missing else "output_rejected")
            return "rejected"
        decls = {name: MetricDecl.model_validate(d) for name, d in job.spec["declared"].items()}
        try:
            reported = gate.parse_result(
                outcome.result,
                decls,
                dataset_rows=job.dataset.rows,
                max_bytes=settings.result_max_bytes,
                max_metrics=settings.max_metrics,
            )
        except (gate.OutputRejected, OverflowError) as e:
            job.operator_log += f"\n[gate] {getattr(e, 'reason', 'number out of range')}"
            transition(s, job, "rejected", actor=ACTOR, error_class="output_rejected")
            return "rejected"
        privacy = job.spec["privacy"]  # the plan admitted is the plan applied, whatever the settings now
        policy = replace(settings.gate_policy(), mechanism=privacy["mechanism"], delta=privacy.get("delta") or 0.0)
        gated = gate.release(
            reported,
            decls,
            epsilon=privacy["epsilon_per_metric"],
            policy=policy,
            noised_metrics=privacy["noised_metrics"],
        )
        finished = utcnow()
        provenance = {
            "spec_sha256": job.spec_sha256,
            "suite": job.spec["suite"],
            "model": job.spec["model"],
            "dataset": job.spec["dataset"],
            "images": outcome.images,
            "runtime": ctx.runtime.family,
            "service_version": __version__,
            "seed": job.spec["seed"],
            "queries": usage,
            "submitted_at": job.created_at.isoformat(),
            # Padded, as the partner sees it: the real run time would be a side channel.
            "completed_within_s": timing.padded_duration(
                (finished - job.created_at).total_seconds(), settings.timing_buckets_s
            ),
        }
        release_service.release(
            s,
            ctx.signer,
            job_id=job.id,
            metrics=gated.metrics,
            disclosure=gated.disclosure(job.spec["leakage_bits"]),
            provenance=provenance,
            actor=ACTOR,
        )
        transition(s, job, "released", actor=ACTOR)
        return "released"


def _operator_log(outcome: Outcome) -> str:
    facts = (
        f"exit={outcome.exit_code} oom={outcome.oom} timed_out={outcome.timed_out} "
        f"cancelled={outcome.cancelled} result_problem={outcome.result_problem} usage={outcome.usage}"
    )
    return f"{facts}\n--- job output (capped) ---\n{outcome.job_log}"


def fail_job(sessions: sessionmaker[Session], job_id: str, error: Exception, log_cap: int = 64 << 10) -> str | None:
    """End a job as internal_error (operators see why; partners see only the class)."""
    with session_scope(sessions) as s:
        job = s.get(Job, job_id)
        if job is None or job.state in TERMINAL:
            return job.state if job else None
        job.operator_log = f"{type(error).__name__}: {error}"[:log_cap]
        if job.state in ("submitted", "awaiting_approval"):
            return job.state  # not ours to run yet
        transition(s, job, "failed", actor=ACTOR, error_class="internal_error")
        return "failed"


def _fail(ctx: WorkerContext, job_id: str, error: Exception) -> str | None:
    return fail_job(ctx.sessions, job_id, error, ctx.settings.log_cap_bytes)


def _settle_leakage(ctx: WorkerContext, job_id: str) -> None:
    """Charge an ended job the bits it carried (idempotent; a redelivery finds it settled)."""
    with session_scope(ctx.sessions) as s:
        job = s.get(Job, job_id)
        if job is not None and job.state in TERMINAL:
            leakage.settle(s, ctx.bits, job, actor=ACTOR)


def run_job(ctx: WorkerContext, job_id: str) -> str | None:
    state = _run(ctx, job_id)
    if state in TERMINAL:
        _settle_leakage(ctx, job_id)
    return state


def _run(ctx: WorkerContext, job_id: str) -> str | None:
    started = _start(ctx, job_id)
    if not isinstance(started, JobSandbox):
        if started in TERMINAL:
            ctx.sandbox.remove(job_id)
        return started
    try:
        outcome = ctx.sandbox.run(started, should_cancel=lambda: _cancel_requested(ctx, job_id))
        return _finish(ctx, job_id, outcome)
    except SandboxError as e:
        log.exception("job %s: sandbox error", job_id)
        return _fail(ctx, job_id, e)
    except Exception as e:  # a bug must not leave the job 'running' forever
        log.exception("job %s: unexpected error", job_id)
        return _fail(ctx, job_id, e)
    finally:
        try:
            ctx.sandbox.remove(job_id)
        except Exception:  # cleanup must not hide the outcome; the start-up sweep retries
            log.exception("job %s: cleanup failed", job_id)
