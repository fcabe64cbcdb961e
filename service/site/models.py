"""Site sessions, and the index the leaderboard's query walks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.auth.models import ApiKey
from service.db import Base, UTCDateTime, utcnow
from service.jobs.models import Job


class SiteSession(Base):
    """A browser's sign-in, made from an API key pasted once. Only SHA-256 of the cookie's token is
    kept (it has 256 bits of entropy, like a key's secret). Every request checks the key it was made
    from as well, so revoking the key ends its sessions at once; a session never outlives its key."""

    __tablename__ = "site_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    # The token every form of this session carries (compared in constant time).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    api_key: Mapped[ApiKey] = relationship(lazy="joined")


# A leaderboard is one (suite version, dataset version) pair's released jobs. Both indexes cover what
# a page reads of a job (id, model version, partner, end), so a page in date order, its count and the
# chart's latest release of each model version never read the jobs' rows (their specs are large).
Index(
    "ix_jobs_leaderboard",
    Job.suite_version_id,
    Job.dataset_version_id,
    Job.state,
    Job.finished_at,
    Job.id,
    Job.model_version_id,
    Job.principal_id,
)
Index(
    "ix_jobs_leaderboard_model",
    Job.suite_version_id,
    Job.dataset_version_id,
    Job.state,
    Job.model_version_id,
    Job.finished_at,
    Job.id,
    Job.principal_id,
)
