"""Turning a gated result into a release: at most once per job, signed, on the ledger."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.ledger import service as ledger
from service.release.models import Result
from service.release.signing import Signer


def statement(job_id: str, metrics: dict, disclosure: dict, provenance: dict) -> dict:
    """The exact object an attestation signs."""
    return {"job_id": job_id, "metrics": metrics, "disclosure": disclosure, "provenance": provenance}


def existing(session: Session, job_id: str) -> Result | None:
    return session.execute(select(Result).where(Result.job_id == job_id)).scalar_one_or_none()


def for_jobs(session: Session, job_ids: list[str]) -> dict[str, Result]:
    """The results of many jobs in one query, by job id."""
    if not job_ids:
        return {}
    return {r.job_id: r for r in session.execute(select(Result).where(Result.job_id.in_(job_ids))).scalars()}


def release(
    session: Session, signer: Signer, *, job_id: str, metrics: dict, disclosure: dict, provenance: dict, actor: str
) -> Result:
    found = existing(session, job_id)
    if found is not None:
        return found
    signature = signer.sign(statement(job_id, metrics, disclosure, provenance))
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
    )
    session.add(result)
    session.flush()
    return result
