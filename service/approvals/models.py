"""Approval requests and operators' decisions on them (service.approvals)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, StrEnumText, UTCDateTime, utcnow


class RequestKind(StrEnum):
    EXCEPTION = "exception"  # a job that asks for more than its partner's policy allows
    SUITE = "suite"  # custom code to run (only when two operators must approve it)


class RequestState(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"  # its job ended (cancelled by its partner) before anyone decided


class Decision(StrEnum):
    GRANT = "grant"
    DENY = "deny"


class ExceptionRule(StrEnum):
    """The policy limits a job may ask an operator to go past."""

    MAX_EPSILON_PER_METRIC = "max_epsilon_per_metric"
    MAX_QUERY_BUDGET = "max_query_budget"
    MODELS = "models"
    DATASETS = "datasets"


class ApprovalRequest(Base):
    __tablename__ = "approval_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[RequestKind] = mapped_column(StrEnumText(RequestKind, 16))
    state: Mapped[RequestState] = mapped_column(StrEnumText(RequestState, 16), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, unique=True)
    suite_version_id: Mapped[int | None] = mapped_column(ForeignKey("suite_versions.id"), nullable=True, index=True)
    principal_id: Mapped[int | None] = mapped_column(ForeignKey("principals.id"), nullable=True, index=True)
    # What is asked beyond the policy, each {"rule", "asked", "limit"}; exactly what a grant allows.
    exceptions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)  # the partner's own words
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # the deciding operator's reason
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApprovalDecision(Base):
    """One operator's grant or denial of a request, with the reason."""

    __tablename__ = "approval_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("approval_requests.id"), index=True)
    actor: Mapped[str] = mapped_column(String(96))
    decision: Mapped[Decision] = mapped_column(StrEnumText(Decision, 8))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
