"""What a job's page shows: the job as the caller's API call would answer it (jobs.views.to_read),
the server's own check of its release's signatures and log entry, and its reproductions as
`GET /v1/jobs/{id}/reproductions` would answer them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from service.auth.roles import Role
from service.auth.service import Caller
from service.config import Settings
from service.errors import NotFound
from service.jobs import service as jobs_service
from service.jobs.schemas import JobRead
from service.jobs.states import JobState
from service.jobs.views import to_read
from service.release import service as release_service
from service.release import signing
from service.release.models import Result
from service.release.signing import Signer
from service.reproductions import service as reproductions
from service.reproductions.schemas import ReproductionRead
from service.site.leaderboard import Cell, cells
from service.site.problems import PageError
from service.site.sessions import pseudonym
from service.transparency import service as tlog
from service.transparency import verify


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not checked here, and why is in `note`
    note: str


@dataclass
class JobView:
    job: JobRead
    partner: str
    metrics: list[str]
    cells: dict[str, Cell]
    digests: list[tuple[str, str]]
    checks: list[Check] = field(default_factory=list)
    verified: bool = False
    public_key: str = ""
    log_shown: bool = False
    reproductions: list[ReproductionRead] = field(default_factory=list)
    can_reproduce: bool = False  # released, and the caller may ask (service.reproductions)


def _not_found(job_id: str) -> PageError:
    return PageError(
        404,
        "Job not found",
        f"There is no job {job_id} that you can see. It may not exist, belong to another partner, or not have "
        "been released yet.",
    )


def load(session: Session, signer: Signer, settings: Settings, caller: Caller, job_id: str, secret: bytes) -> JobView:
    try:
        job = jobs_service.get_visible(session, caller, job_id)
    except NotFound:
        raise _not_found(job_id) from None
    # The site shows researchers released results only (see SECURITY.md, "The results site").
    if caller.role == Role.RESEARCHER and job.state != JobState.RELEASED:
        raise _not_found(job_id)
    view = to_read(session, job, caller, settings.timing_buckets_s)
    metrics: list[str] = list(view.spec.get("metrics") or [])
    page = JobView(
        job=view,
        partner=pseudonym(secret, job.principal_id),
        metrics=metrics,
        cells={},
        digests=_digests(view),
        public_key=signer.public_key_b64,
    )
    result = release_service.existing(session, job.id) if view.result is not None else None
    if result is not None:
        page.cells = cells(result, metrics)
        page.checks, page.log_shown = _checks(session, signer, settings, caller, result)
        page.verified = all(c.ok is not False for c in page.checks) and any(c.ok for c in page.checks)
    page.reproductions = reproductions.of_job(session, caller, job, settings.timing_buckets_s)
    page.can_reproduce = result is not None and reproductions.may_request(settings, caller)
    return page


def _digests(view: JobRead) -> list[tuple[str, str]]:
    spec: dict[str, Any] = view.spec
    out = [("job spec", view.spec_sha256)]
    for what in ("suite", "model", "dataset"):
        part = spec.get(what) or {}
        if part.get("sha256"):
            label = part.get("ref") or f"{part.get('name')}@{part.get('version')}"
            out.append((f"{what} {label}", str(part["sha256"])))
    provenance = view.result.provenance if view.result is not None else {}
    for role, image in sorted((provenance.get("images") or {}).items()):
        out.append((f"{role} image", str(image)))
    return out


def _checks(
    session: Session, signer: Signer, settings: Settings, caller: Caller, result: Result
) -> tuple[list[Check], bool]:
    """The server's checks of a release: its signature over the released statement, and (where the
    transparency log has its entry) the DSSE envelope, the statement and, for those who may read the
    log, its inclusion in the log as it is now. Partners are not shown the log (SECURITY.md)."""
    statement = release_service.statement(result.job_id, result.metrics, result.disclosure, result.provenance)
    ok = signing.verify(signer.public_key_b64, statement, result.signature) and result.key_id == signer.key_id
    checks = [Check("release signature", ok, f"Ed25519, key {result.key_id}")]
    if result.envelope is None or result.leaf_index is None:
        checks.append(Check("transparency log", None, "released before the log existed: no entry"))
        return checks, False
    with_log = caller.role != Role.PARTNER
    assert settings.log_origin is not None
    try:
        bundle = tlog.bundle(session, signer, settings.log_origin, result, with_log=with_log)
        report = verify.verify_bundle(bundle, signer.public_key_raw)
    except verify.VerificationFailed as e:
        checks.append(Check(e.check, False, e.reason))
        return checks, with_log
    for name in report.checked:
        checks.append(Check(name, True, _explain(name, report)))
    for name in report.not_checked:
        note = "not shown to partners: researchers can check it" if not with_log else "not checked"
        checks.append(Check(name, None, note))
    return checks, with_log


def _explain(name: str, report: Any) -> str:
    if name == "inclusion" and report.leaf_index is not None:
        return f"entry {report.leaf_index} of a tree of {report.tree_size}"
    return {
        "signature": "DSSE envelope signed by the service's key",
        "statement": "the signed statement names this job and the digest of its released metrics",
        "checkpoint": "the log's checkpoint is signed by the service's key",
    }.get(name, "")
