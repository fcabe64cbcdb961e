"""Reproducing a released job: the rules.

    request ──▶ no HMAC of the original's raw result: no_reference (nothing runs)
            ──▶ its model or dataset version retired: could_not_run / asset_retired (nothing runs)
            ──▶ a run: a job row with a new id (so its containers, uid, lease and sweep are its own),
                the original's spec (suite, model and dataset digests, seed, resources), the images
                recorded in the original's provenance, exactly the original's model rows, charged to
                the requester: no ε, no bits, no release slot (nothing is released)
    the worker (jobs.runner) runs it as any job; where a job would be judged by the gate, the run's
    raw (pre-noise) result is compared with the original's by HMAC (release.raw): reproduced or
    differs. A run that cannot start or ends otherwise (an image or file gone, the sandbox failed, its
    worker died and the reaper ended it) could not run, with the reason (record.py).

Nothing new is released, and the original's release stays as it was. Every outcome goes on the
ledger and the transparency log (record.py).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from service.auth.roles import Role
from service.auth.service import Caller
from service.canonical import digest
from service.config import Settings
from service.jobs import repository as jobs_repo
from service.jobs.models import Job
from service.jobs.service import record_submitted, transition
from service.jobs.states import JobState
from service.jobs.views import partner_view
from service.ledger import service as ledger
from service.quotas import lifetime
from service.quotas.service import Budgets, Partner, Plan
from service.quotas.store import seconds_to_reset
from service.registry import storage
from service.release import raw
from service.release import service as release_service
from service.reproductions import errors, record
from service.reproductions import repository as repo
from service.reproductions.models import CouldNotRun, Outcome, Reproduction
from service.reproductions.schemas import ReproductionLog, ReproductionRead
from service.sandbox.errors import ImageMissing

ACTOR = "worker"


class ArtifactMissing(RuntimeError):
    """A file the original ran with (suite bundle, model, dataset) is no longer in the data directory."""


def may_request(settings: Settings, caller: Caller) -> bool:
    return caller.role == Role.OPERATOR or (caller.role == Role.RESEARCHER and settings.researchers_may_reproduce)


def request(
    session: Session, settings: Settings, budgets: Budgets, caller: Caller, job: Job
) -> tuple[Reproduction, str | None]:
    """Record a reproduction of `job`, and the run that makes it, charged to the caller. Returns the
    reproduction and the run's id to hand to a worker once committed (None: it ended at once)."""
    if not may_request(settings, caller):
        alternatives = ["ask an operator to reproduce it"]
        if caller.role == Role.RESEARCHER:
            alternatives.append(
                "ask the operator to allow researchers to reproduce (EVALGATE_RESEARCHERS_MAY_REPRODUCE)"
            )
        raise errors.ReproductionNotAllowed(
            f"a {caller.role} may not ask for reproductions here", alternatives=alternatives
        )
    result = release_service.existing(session, job.id)
    if job.state != JobState.RELEASED or result is None:
        raise errors.JobNotReleased(
            f"job {job.id} is {job.state}: only a released job can be reproduced",
            alternatives=["reproduce a released job"],
        )
    shown = partner_view(job, settings.timing_buckets_s)[0]
    if shown != JobState.RELEASED:
        # Its partner reads the job's reproductions: one asked before it sees the release would tell it.
        raise errors.JobNotReleased(
            f"job {job.id} is released, but its partner sees it only from its padded time",
            alternatives=["ask again in a few minutes"],
        )
    twin = jobs_repo.unfinished_twin_job(session, job.principal_id)
    if twin is not None:
        raise errors.PartnersTwinJobRunning(
            f"job {job.id}'s partner has a job on a synthetic twin that has not ended; a re-run of its code"
            " never runs beside one (SECURITY.md, twin jobs)",
            alternatives=["ask again in a few minutes"],
        )
    if repo.open_count(session, job.id) > 0:
        raise errors.ReproductionInProgress(
            f"a reproduction of job {job.id} is on its way",
            alternatives=[f"read it at GET /v1/jobs/{job.id}/reproductions"],
        )
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if repo.count_since(session, job.id, midnight) >= settings.reproductions_per_job_per_day:
        raise errors.ReproductionsExhausted(
            f"job {job.id} was reproduced {settings.reproductions_per_job_per_day} times today, the most allowed",
            alternatives=[f"try again after 00:00 UTC, in {seconds_to_reset()} s"],
            retry_after_s=seconds_to_reset(),
        )
    reproduction = Reproduction(id=str(uuid.uuid4()), job_id=job.id, principal_id=caller.principal_id)
    session.add(reproduction)
    session.flush()
    ledger.append(
        session,
        actor=caller.actor,
        action="reproduction.requested",
        subject=f"job:{job.id}",
        data={"reproduction_id": reproduction.id},
    )
    if result.raw_hmac is None:  # released before raw results were kept: nothing to compare with
        record.conclude(session, reproduction, Outcome.NO_REFERENCE, actor=caller.actor)
        return reproduction, None
    if job.model.status == "retired" or job.dataset.status == "retired":
        record.conclude(
            session, reproduction, Outcome.COULD_NOT_RUN, actor=caller.actor, reason=CouldNotRun.ASSET_RETIRED
        )
        return reproduction, None
    run = record_submitted(
        session,
        job_id=reproduction.id,
        principal_id=caller.principal_id,
        spec=job.spec,
        release_key=digest({"reproduction": reproduction.id}),  # never "the same release" as anything
        suite_version_id=job.suite_version_id,
        model_version_id=job.model_version_id,
        dataset_version_id=job.dataset_version_id,
        actor=caller.actor,
        reproduces=job.id,
        data={"reproduces": job.id},
    )
    # Exactly the model rows the original was granted: fewer would not reproduce it, and more
    # would be a budget the original never had.
    rows = budgets.rows_granted(session, job.id) or int(job.spec["resources"]["query_budget"])
    caps = lifetime.caps_for(settings, caller.principal_id, job.dataset, job.model)
    plan = Plan(
        dataset_id=job.dataset_version_id,
        dataset_ref=job.dataset.ref,
        epsilon_per_metric=0.0,
        epsilon_total=0.0,
        noised_metrics=(),
        bits=0.0,
        rows=rows,
        model_id=job.model_version_id,
        caps=replace(caps, bits=()),  # nothing is released: only the model rows count
        releases=False,
        exact_rows=True,
    )
    budgets.reserve(session, Partner(caller.principal_id, caller.name, str(caller.role)), run.id, plan)
    transition(session, run, JobState.QUEUED, actor="reproduction")
    return reproduction, run.id


def record_refusal(session: Session, caller: Caller, job_id: str, code: str | None) -> None:
    """Refusals are decisions too. Called on a session whose request rolled back; the caller commits."""
    ledger.append(
        session, actor=caller.actor, action="reproduction.refused", subject=f"job:{job_id}", data={"reason": code}
    )


# -- the worker's side (jobs.runner) ----------------------------------------------------------------------


def recorded_images(session: Session, run: Job) -> dict[str, str]:
    """The job and sidecar image ids the original ran with, as its provenance recorded them."""
    assert run.reproduces is not None
    result = release_service.existing(session, run.reproduces)
    images = (result.provenance.get("images") if result is not None else None) or {}
    if not images.get("job") or not images.get("sidecar"):
        raise ImageMissing(f"the release of job {run.reproduces} recorded no image ids")
    return {"job": str(images["job"]), "sidecar": str(images["sidecar"])}


def check_artifacts(settings: Settings, run: Job) -> None:
    """Raise ArtifactMissing unless every file the original ran with is still kept."""
    blobs = [("model", run.model.sha256), ("dataset", run.dataset.sha256)]
    if run.spec.get("mode") == "rows" and run.dataset.features_sha256 is not None:
        blobs.append(("dataset features", run.dataset.features_sha256))
    for what, sha in blobs:
        if not storage.blob_path(settings.data_dir, sha).is_file():
            raise ArtifactMissing(f"the {what} file {sha} is no longer kept")
    if not storage.suite_dir(settings.data_dir, run.suite.sha256).is_dir():
        raise ArtifactMissing(f"the suite bundle {run.suite.sha256} is no longer kept")


def could_not_start(session: Session, run: Job, error: Exception) -> None:
    """The run's sandbox could not be prepared: say why, before the run ends."""
    reproduction = session.get(Reproduction, run.id)
    if reproduction is None:
        return
    if isinstance(error, ImageMissing):
        reason = CouldNotRun.IMAGE_MISSING
    elif isinstance(error, ArtifactMissing):
        reason = CouldNotRun.ARTIFACT_MISSING
    else:
        return  # the run's ending records run_failed with its error class (record.run_ended)
    record.conclude(session, reproduction, Outcome.COULD_NOT_RUN, actor=ACTOR, reason=reason)


def compare(session: Session, settings: Settings, run: Job, pre_noise: dict[str, object]) -> Outcome:
    """The run's raw result against the original's, by HMAC under the server secret."""
    assert run.reproduces is not None
    reproduction = session.get(Reproduction, run.id)
    original = release_service.existing(session, run.reproduces)
    if reproduction is None or original is None or original.raw_hmac is None:
        raise LookupError(f"run {run.id}: its reproduction or the original's raw HMAC is gone")
    mine = raw.digest(raw.secret(settings.data_dir), run.reproduces, pre_noise)
    outcome = Outcome.REPRODUCED if raw.same(mine, original.raw_hmac) else Outcome.DIFFERS
    record.conclude(session, reproduction, outcome, actor=ACTOR)
    return outcome


# -- reading ------------------------------------------------------------------------------------------------


def of_job(session: Session, caller: Caller, job: Job, buckets: list[float]) -> list[ReproductionRead]:
    """A job's reproductions as the caller may see them (the job itself is visible: jobs.dependencies)."""
    return [to_read(r, caller, job, buckets) for r in repo.of_job(session, job.id)]


def to_read(
    r: Reproduction, caller: Caller, job: Job, buckets: list[float], now: datetime | None = None
) -> ReproductionRead:
    """Operators and researchers see it as it is. The job's partner sees the outcome and reason only
    from record.shown_to_partner_at on, and neither who asked, nor the re-run's error class, nor the log
    (SECURITY.md, "Reproductions")."""
    outcome, reason, finished = r.outcome, r.reason, r.finished_at
    if caller.role != Role.PARTNER:
        log = None
        if r.leaf_index is not None and r.log_record is not None:
            log = ReproductionLog(leaf_index=r.leaf_index, record=r.log_record)
        return ReproductionRead(
            id=r.id,
            job_id=r.job_id,
            requested_by=r.principal.name,
            requester_role=Role(r.principal.role),
            requested_at=r.created_at,
            outcome=outcome,
            reason=reason,
            error_class=r.error_class,
            finished_at=finished,
            log=log,
        )
    finished = record.shown_to_partner_at(r, job, buckets)
    if finished is not None and (now or datetime.now(UTC)) < finished:
        outcome, reason, finished = None, None, None
    return ReproductionRead(
        id=r.id,
        job_id=r.job_id,
        requested_by=None,
        requester_role=Role(r.principal.role),
        requested_at=r.created_at,
        outcome=outcome,
        reason=reason,
        error_class=None,
        finished_at=finished,
        log=None,
    )
