"""Hard-rule trips and the suspensions they lead to (service.sanctions)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, StrEnumText, UTCDateTime, utcnow


class Rule(StrEnum):
    """The hard rules whose trips count towards a suspension."""

    OUTPUT_REJECTED = "output_rejected"  # the release gate refused what the job's code wrote
    QUERY_BUDGET_EXCEEDED = "query_budget_exceeded"  # the job's code queried the model past its budget
    BUDGET_EXHAUSTED = "budget_exhausted"  # a submission refused because a budget of the partner ran out
    PROTOCOL_ABUSE = "protocol_abuse"  # the job's code sent the sidecar frames or ops the SDK never sends


class PartnerTrip(Base):
    """One hard-rule trip. `at` is when its partner can first see it: a job's ending at its padded
    time, so a suspension never tells the partner early how a job of its ended."""

    __tablename__ = "partner_trips"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    rule: Mapped[Rule] = mapped_column(StrEnumText(Rule, 32))
    subject: Mapped[str] = mapped_column(String(96))  # job:<id>, or the refusal's code
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class PartnerSuspension(Base):
    """A partner's suspension: active until an operator lifts it (`lifted_at`)."""

    __tablename__ = "partner_suspensions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    trips: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # rule -> count, when it was suspended
    suspended_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    suspended_by: Mapped[str] = mapped_column(String(96))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lifted_by: Mapped[str | None] = mapped_column(String(96), nullable=True)
    lift_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
