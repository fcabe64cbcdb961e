"""Every query of the reproductions domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.reproductions.models import Reproduction


def of_job(session: Session, job_id: str) -> list[Reproduction]:
    """A job's reproductions, newest first."""
    q = select(Reproduction).where(Reproduction.job_id == job_id).order_by(Reproduction.created_at.desc())
    return list(session.execute(q).scalars())


def open_count(session: Session, job_id: str) -> int:
    q = select(func.count()).where(Reproduction.job_id == job_id, Reproduction.outcome.is_(None))
    return int(session.execute(q).scalar_one())


def count_since(session: Session, job_id: str, since: datetime) -> int:
    q = select(func.count()).where(Reproduction.job_id == job_id, Reproduction.created_at >= since)
    return int(session.execute(q).scalar_one())
