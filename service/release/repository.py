"""Every query of the release domain."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.release.models import Result


def result_of(session: Session, job_id: str) -> Result | None:
    return session.execute(select(Result).where(Result.job_id == job_id)).scalar_one_or_none()


def results_of(session: Session, job_ids: list[str]) -> dict[str, Result]:
    """The results of many jobs in one query, by job id."""
    if not job_ids:
        return {}
    return {r.job_id: r for r in session.execute(select(Result).where(Result.job_id.in_(job_ids))).scalars()}
