"""Sanctions as operators read and change them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class SuspensionRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    reason: str = Field(description="why the partner was suspended")
    trips: dict[str, int] = Field(description="the trips of the day that led to it, by rule")
    suspended_at: datetime
    suspended_by: str
    lifted_at: datetime | None
    lifted_by: str | None
    lift_reason: str | None


class SuspensionRead(BaseModel):
    partner: str
    suspended: bool
    reason: str | None = Field(description="why, while suspended")
    since: datetime | None
    trips_today: dict[str, int] = Field(description="hard-rule trips counted today (since the last lift), by rule")
    limit: int = Field(description="trips per UTC day past which the partner is suspended")
    history: list[SuspensionRecord] = Field(description="the partner's suspensions, newest first")


class SuspensionLift(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, description="why: recorded on the audit log")
