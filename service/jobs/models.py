from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.auth.models import Principal
from service.db import Base, StrEnumText, UTCDateTime, utcnow
from service.jobs.states import JobState, JobTarget
from service.registry.models import DatasetVersion, ModelVersion, SuiteVersion
from service.release.outcomes import ErrorClass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    state: Mapped[JobState] = mapped_column(StrEnumText(JobState, 24), index=True)
    error_class: Mapped[ErrorClass | None] = mapped_column(StrEnumText(ErrorClass, 32), nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    # Same partner, suite digest, model, dataset and metrics: the same release, never fresh noise.
    release_key: Mapped[str] = mapped_column(String(64), index=True)
    suite_version_id: Mapped[int] = mapped_column(ForeignKey("suite_versions.id"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    # `twin`: the job runs on the twin and stand-in of its dataset and model versions (service.jobs.twin).
    target: Mapped[JobTarget] = mapped_column(
        StrEnumText(JobTarget, 8), default=JobTarget.REAL, server_default=JobTarget.REAL.value
    )
    # A twin job's capped stdout and stderr and the release gate's verdict, for its partner: nothing
    # private went into them. Never set for a real job.
    twin_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set on a reproduction's run (service.reproductions): the released job it re-runs. Such a job is
    # the requester's, releases nothing, and appears in no job listing.
    reproduces: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    # The host uid its sandbox runs as while it runs (jobs.repository.allocate_sandbox_uid).
    sandbox_uid: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The worker running the job, and when its claim runs out unless renewed (jobs.leases).
    lease_owner: Mapped[str | None] = mapped_column(String(96), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # For operators only: capped container output and internal error text. Never shown to partners.
    operator_log: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the sandbox left, recorded when the job entered `gating`, so a worker that dies in the gate
    # leaves the next one all it needs. The raw result is dropped once the job has ended.
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result_raw: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    principal: Mapped[Principal] = relationship(lazy="joined")
    suite: Mapped[SuiteVersion] = relationship(lazy="joined")
    model: Mapped[ModelVersion] = relationship(lazy="joined")
    dataset: Mapped[DatasetVersion] = relationship(lazy="joined")
