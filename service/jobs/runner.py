"""Running a job on a worker: the state machine, one step per state.

    queued ──start──▶ running ──run the sandbox──▶ gating ──release.conclude──▶ released | rejected
                                                                                | failed | cancelled

`run_job` first claims the job (jobs.leases): a job another worker holds is left to it. Then it
counts the attempt and loops: it reads the job's state and does that state's step; each step re-reads
the job in its own transaction, acts only if the job is still in the state the step is for and still
this worker's, commits, and returns the state it left the job in. Any error ends the job as
`internal_error` (operators see why). So it is safe to call again for the same job at any point (a
Celery redelivery, a message the reconciler sent again): a job in `gating` is judged from the
outcome recorded when it entered it. A worker that dies stops renewing its claim, and the reaper
(jobs.recovery) recovers the job by the same rules.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service import faults
from service.config import Settings
from service.db import session_scope
from service.inference.contract import RESULT_NAME, ROWS_NAME, Env
from service.jobs import repository as jobs_repo
from service.jobs import service as jobs_service
from service.jobs import twin
from service.jobs.context import WorkerContext
from service.jobs.leases import LeaseLost
from service.jobs.models import Job
from service.jobs.states import RUNNABLE, TERMINAL, JobState, JobTarget
from service.quotas.service import Budgets
from service.registry import datasets, storage
from service.registry import service as registry
from service.release import gate, metrics
from service.release import service as release_service
from service.release.outcomes import ErrorClass
from service.reproductions import service as reproductions
from service.sandbox.spec import JobSandbox, Limits, Outcome

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
ACTOR = "worker"


def run_job(ctx: WorkerContext, job_id: str) -> JobState | None:
    """Take the job as far as it goes: to its end, or to a state that waits for someone else (or
    for the worker that holds it). Returns that state (None for an unknown job)."""
    if not ctx.leases.claim(job_id):
        return _state_of(ctx, job_id)  # not runnable, or another worker's
    try:
        state = _steps(ctx, job_id)
    except BaseException:  # as after kill -9: the claim runs out and the reaper recovers the job
        ctx.leases.forget(job_id)
        raise
    ctx.leases.let_go(job_id)
    if state in TERMINAL:
        _remove_sandbox(ctx, job_id)
    return state


def _steps(ctx: WorkerContext, job_id: str) -> JobState | None:
    try:
        state = _attempt(ctx, job_id)
    except LeaseLost:
        return _state_of(ctx, job_id)
    while state in RUNNABLE:
        try:
            match state:
                case JobState.QUEUED:
                    new = _start(ctx, job_id)
                case JobState.RUNNING:
                    new = _run(ctx, job_id)
                case JobState.GATING:
                    new = _gate(ctx, job_id)
            if new == state:
                raise RuntimeError(f"the {state} step left the job {state}")
            state = new
        except LeaseLost as e:  # another worker, or the reaper, has the job now: step aside
            log.error("job %s: %s", job_id, e)
            return _state_of(ctx, job_id)
        except Exception as e:  # a bug or a sandbox failure must not leave the job unfinished
            log.exception("job %s: %s step failed", job_id, state)
            state = fail(ctx, job_id, e)
    return state


def _state_of(ctx: WorkerContext, job_id: str) -> JobState | None:
    with ctx.session() as s:
        job = s.get(Job, job_id)
        return None if job is None else job.state


def _attempt(ctx: WorkerContext, job_id: str) -> JobState | None:
    """Count this delivery of a runnable job; give up on one delivered too often."""
    with ctx.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            log.warning("job %s does not exist", job_id)
            return None
        if job.state not in RUNNABLE:
            return job.state
        ctx.leases.check(s, job)
        job.attempts += 1
        if job.attempts > MAX_ATTEMPTS:
            return _end(ctx, s, job, ErrorClass.INTERNAL_ERROR, note=f"gave up after {MAX_ATTEMPTS} attempts")
        return job.state


def _start(ctx: WorkerContext, job_id: str) -> JobState:
    """queued → running, unless a cancel came first."""
    with ctx.session() as s:
        job = _load(ctx, s, job_id)
        if job.state != JobState.QUEUED:
            return job.state
        if job.cancel_requested:
            return _end(ctx, s, job, ErrorClass.CANCELLED)
        jobs_service.transition(s, job, JobState.RUNNING, actor=ACTOR, data={"attempt": job.attempts})
        return job.state


def _run(ctx: WorkerContext, job_id: str) -> JobState:
    """Run (or resume) the sandbox, record its outcome: running → gating."""
    with ctx.session() as s:
        job = _load(ctx, s, job_id)
        if job.state != JobState.RUNNING:
            return job.state
        try:
            uid = jobs_repo.allocate_sandbox_uid(s, job, ctx.settings.sandbox_uid_base, ctx.settings.sandbox_uid_count)
            spec = _sandbox_spec(ctx, s, job, uid, _images(ctx, s, job))
        except Exception as e:  # no container was made: the partner's code never ran
            log.exception("job %s: preparing its sandbox failed", job_id)
            note = f"{type(e).__name__}: {e}"[: ctx.settings.log_cap_bytes]
            if job.reproduces is not None:  # an image or a file the original ran with is gone: say which
                reproductions.could_not_start(s, job, e)
            return jobs_service.end(s, ctx.budgets, job, ErrorClass.INTERNAL_ERROR, actor=ACTOR, note=note, ran=False)
    # A lost claim stops the sandbox as a cancel would; then nothing of it is recorded.
    outcome = ctx.sandbox.run(
        spec, should_cancel=lambda: not ctx.leases.holds(job_id) or _cancel_requested(ctx, job_id)
    )
    with ctx.session() as s:
        job = _load(ctx, s, job_id)
        if job.state != JobState.RUNNING:  # ended meanwhile (an operator)
            return job.state
        usage = {"rows": int(outcome.usage.get("rows", 0)), "requests": int(outcome.usage.get("requests", 0))}
        job.operator_log = _operator_log(outcome)
        job.outcome = outcome.facts()
        job.result_raw = outcome.result
        if job.target == JobTarget.TWIN:  # its partner reads its output: nothing private is in it
            job.twin_report = twin.report(outcome, ctx.settings.twin_log_cap_bytes)
        jobs_service.transition(s, job, JobState.GATING, actor=ACTOR, data={"queries": usage})
    # The outcome is recorded: the stopped containers are removed once the job has ended, after the
    # gate, so their removal is not on the way to the partner's result.
    return JobState.GATING


def _gate(ctx: WorkerContext, job_id: str) -> JobState:
    """gating → the job's end, as the release domain judges the recorded outcome."""
    with ctx.session() as s:
        job = _load(ctx, s, job_id)
        if job.state != JobState.GATING:
            return job.state
        if job.outcome is None:
            return _end(ctx, s, job, ErrorClass.INTERNAL_ERROR, note="the sandbox's outcome was not recorded")
        if job.cancel_requested:  # asked before the job ended: it ends as asked, whatever it reported
            return _end(ctx, s, job, ErrorClass.CANCELLED)
        case = _case(ctx, job)
        outcome = Outcome.from_facts(job.outcome, job.result_raw)
        if job.reproduces is not None:
            return _compare(ctx, s, job, case, outcome)
        if job.target == JobTarget.TWIN:  # the gate's verdict, for its partner; nothing is released
            error_class, note = twin.conclude(s, ctx.settings, job, case, outcome)
            return _end(ctx, s, job, error_class, note=note)
        ending = release_service.conclude(s, ctx.signer, ctx.settings, case, outcome)
        state = _end(ctx, s, job, ending.error_class, note=ending.note)
        faults.point("gate")  # a crash here rolls the release back: the job is judged again, once
        return state


def _case(ctx: WorkerContext, job: Job) -> release_service.Case:
    truth, features = None, None
    path, rows = storage.blob_path(ctx.settings.data_dir, job.dataset.sha256), job.dataset.rows
    if job.target == JobTarget.TWIN:  # judged on the twin it ran on
        files = twin.files(ctx.settings, job)
        path, rows = files.dataset, files.rows
    if job.spec.get("mode") == "rows":  # the labels, which only this trusted side reads
        y = datasets.labels(path)
        truth = metrics.Truth(y=y, classes=job.dataset.classes)
        if job.spec["rows"].get("slices"):
            features = datasets.features(path)
    return release_service.Case(
        job_id=job.id,
        spec=job.spec,
        spec_sha256=job.spec_sha256,
        dataset_rows=rows,
        submitted_at=job.created_at,
        runtime=ctx.runtime.family,
        truth=truth,
        features=features,
    )


def _compare(ctx: WorkerContext, s: Session, job: Job, case: release_service.Case, outcome: Outcome) -> JobState:
    """A reproduction's run, where a job would meet the gate: its raw result against the original's
    (nothing is released). A run that did not end well could not run, with its error class."""
    error_class, note = release_service.classify(outcome), ""
    if error_class is None:
        try:
            pre_noise = release_service.raw_result(ctx.settings, case, outcome)
        except (metrics.RowsRejected, gate.OutputRejected) as e:
            error_class, note = ErrorClass.OUTPUT_REJECTED, f"[reproduction] {e}"
        else:
            reproductions.compare(s, ctx.settings, job, pre_noise)
    return _end(ctx, s, job, error_class, note=note)  # run_failed is recorded as the run ends


def fail(ctx: WorkerContext, job_id: str, error: Exception) -> JobState | None:
    """End a job as internal_error (operators see why; partners see only the class)."""
    return fail_job(ctx.sessions, ctx.budgets, job_id, error, ctx.settings.log_cap_bytes, owner=ctx.leases.owner)


def fail_job(
    sessions: sessionmaker[Session],
    budgets: Budgets,
    job_id: str,
    error: Exception,
    log_cap: int = 64 << 10,
    owner: str | None = None,
) -> JobState | None:
    """The same, without a worker context (the embedded dispatcher when no Docker engine answers).
    Only a job this worker holds (`owner`), or that no worker holds, is failed."""
    with session_scope(sessions) as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        if job.state not in RUNNABLE or job.lease_owner not in (None, owner):
            return job.state  # ended already, not ours to run yet, or another worker's
        note = f"{type(error).__name__}: {error}"[:log_cap]
        return jobs_service.end(s, budgets, job, ErrorClass.INTERNAL_ERROR, actor=ACTOR, note=note)


def _end(ctx: WorkerContext, s: Session, job: Job, error_class: ErrorClass | None, note: str = "") -> JobState:
    return jobs_service.end(s, ctx.budgets, job, error_class, actor=ACTOR, note=note or None)


def _load(ctx: WorkerContext, s: Session, job_id: str) -> Job:
    """The job, still held by this worker (else LeaseLost)."""
    job = s.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} vanished")
    if job.state in RUNNABLE:
        ctx.leases.check(s, job)
    return job


def _cancel_requested(ctx: WorkerContext, job_id: str) -> bool:
    with ctx.session() as s:
        job = s.get(Job, job_id)
        return job is None or job.cancel_requested


def _remove_sandbox(ctx: WorkerContext, job_id: str) -> None:
    try:
        ctx.sandbox.remove(job_id)
    except Exception:  # cleanup must not hide the outcome; the start-up sweep retries
        log.exception("job %s: cleanup failed", job_id)


def rows_file_bound(n: int, classes: int) -> int:
    """The most bytes a rows file of n rows may take: float64 per class (or one value), and room for
    the .npz's own headers."""
    return n * max(classes, 1) * 8 + (64 << 10)


def _images(ctx: WorkerContext, s: Session, job: Job) -> dict[str, str]:
    """The image ids to run: the deployment's images now, or for a reproduction's run exactly the ones
    its original ran (ImageMissing if the host no longer has them), after checking its files are kept."""
    if job.reproduces is None:
        return {"job": ctx.settings.job_image, "sidecar": ctx.settings.sidecar_image}
    reproductions.check_artifacts(ctx.settings, job)
    return reproductions.recorded_images(s, job)


def sandbox_limits(s: Settings, resources: dict[str, Any], result_max: int, output_bytes: int) -> Limits:
    """A job's sandbox limits: its resources as admitted, the rest the deployment's (also what
    `evalgate dev run` gives a suite, so a dev run is held as a real job is)."""
    return Limits(
        memory_mb=resources["memory_mb"],
        cpus=resources["cpus"],
        timeout_s=resources["timeout_s"],
        pids=s.pids_limit,
        tmp_mb=s.tmp_size_mb,
        output_bytes=output_bytes,
        output_inodes=s.output_dir_inodes,
        log_cap_bytes=s.log_cap_bytes,
        sidecar_memory_mb=s.sidecar_memory_mb,
        sidecar_reserve_mb=s.sidecar_reserve_mb,
        max_connections=s.sidecar_max_connections,
        result_max_bytes=result_max,
        max_requests=s.max_requests_per_job,
        max_batch_rows=s.max_batch_rows,
        max_requests_per_s=s.max_requests_per_s,
    )


def _sandbox_spec(ctx: WorkerContext, session: Session, job: Job, uid: int, images: dict[str, str]) -> JobSandbox:
    """The job's sandbox: on its versions, with the model rows its reservation granted; a twin job on
    its twin and stand-in, with its own query budget, its stdout and stderr kept for its partner."""
    s = ctx.settings
    res = job.spec["resources"]
    env: dict[str, str] = {Env.SEED: str(job.spec["seed"]), Env.METRICS: ",".join(job.spec["metrics"])}
    result_name, result_max, output_bytes = RESULT_NAME, s.result_max_bytes, s.output_dir_bytes
    model_path, n, separate = storage.blob_path(s.data_dir, job.model.sha256), job.dataset.rows, None
    if job.target == JobTarget.TWIN:
        files = twin.files(s, job)
        model_path, dataset_path, n = files.model, files.job_dataset, files.rows
        query_rows, separate = twin.query_budget(job, files.rows), s.twin_log_cap_bytes
    else:
        query_rows = ctx.budgets.rows_granted(session, job.id)
        dataset_path = storage.blob_path(s.data_dir, job.dataset.sha256)
        if job.spec.get("mode") == "rows":
            # The job is given the features only: its code never sees the labels.
            dataset_path = storage.blob_path(s.data_dir, registry.features_sha256(s, job.dataset))
    if job.spec.get("mode") == "rows":
        spec_rows = job.spec["rows"]
        result_name = ROWS_NAME
        result_max = rows_file_bound(n, spec_rows["classes"])
        output_bytes = max(output_bytes, result_max + (1 << 20))
        env |= {
            Env.ROWS: spec_rows["kind"],
            Env.MODEL_OUTPUT: spec_rows["output"],
            Env.OUTPUT_ROLE: spec_rows["role"],
            Env.CLASSES: str(spec_rows["classes"]),
        }
    inference = job.spec["model"].get("inference") or job.model.inference
    return JobSandbox(
        job_id=job.id,
        job_image=ctx.sandbox.image_id(images["job"]),
        sidecar_image=ctx.sandbox.image_id(images["sidecar"]),
        model_path=model_path,
        dataset_path=dataset_path,
        suite_path=storage.suite_dir(s.data_dir, job.suite.sha256),
        entrypoint=job.suite.entrypoint,
        env=env,
        query_budget_rows=query_rows,
        result_name=result_name,
        sidecar_threads=int(inference.get("intra_op_threads", s.inference_threads)),
        output_policy=job.spec["model"].get("output_policy") or {"kind": "full"},
        score_outputs=tuple((job.model.contract or {}).get("scores", [])),
        job_user=f"{uid}:{uid}",
        limits=sandbox_limits(s, res, result_max, output_bytes),
        runtime=ctx.runtime,
        separate_output_bytes=separate,
    )


def _operator_log(outcome: Outcome) -> str:
    facts = (
        f"exit={outcome.exit_code} oom={outcome.oom} timed_out={outcome.timed_out} "
        f"cancelled={outcome.cancelled} result_problem={outcome.result_problem} usage={outcome.usage}"
    )
    return f"{facts}\n--- job output (capped) ---\n{outcome.job_log}"
