from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.auth.models import Principal
from service.db import Base, StrEnumText, UTCDateTime, utcnow
from service.release.outcomes import ErrorClass


class Outcome(StrEnum):
    """How a reproduction ended. Nothing is released by any of them."""

    REPRODUCED = "reproduced"  # the re-run's raw result has the original's HMAC
    DIFFERS = "differs"  # it ran to the end, and its raw result is not the original's
    COULD_NOT_RUN = "could_not_run"  # see the reason
    NO_REFERENCE = "no_reference"  # released before raw results were kept as an HMAC: nothing to compare


class CouldNotRun(StrEnum):
    """Why a reproduction could not run (or not to the end)."""

    IMAGE_MISSING = "image_missing"  # the job or sidecar image recorded in provenance is no longer on the host
    ARTIFACT_MISSING = "artifact_missing"  # the suite bundle, model or dataset file was purged
    ASSET_RETIRED = "asset_retired"  # the model or dataset version was retired by an operator
    RUN_FAILED = "run_failed"  # the re-run ended with an error class (operators and researchers see which)


class Reproduction(Base):
    """One request to reproduce a released job. Its run, when it has one, is the job row with the same
    id and `reproduces` = `job_id` (the requester's, charged to the requester)."""

    __tablename__ = "reproductions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    outcome: Mapped[Outcome | None] = mapped_column(StrEnumText(Outcome, 24), nullable=True)
    reason: Mapped[CouldNotRun | None] = mapped_column(StrEnumText(CouldNotRun, 24), nullable=True)
    error_class: Mapped[ErrorClass | None] = mapped_column(StrEnumText(ErrorClass, 32), nullable=True)
    # What its transparency-log entry commits to (canonical JSON, record.py), and the entry's index.
    log_record: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    leaf_index: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    principal: Mapped[Principal] = relationship(lazy="joined")
