"""Approval requests as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.approvals.models import Decision, RequestKind, RequestState


class DecisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    actor: str
    decision: Decision
    reason: str
    at: datetime


class ApprovalBrief(BaseModel):
    """A job's request above its policy, as its reader sees it (`JobRead.approval`)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    state: RequestState
    exceptions: list[dict[str, Any]] = Field(
        description='what was asked past the policy: each {"rule", "asked", "limit"}'
    )
    note: str | None = Field(description="the partner's own words with the request")
    reason: str | None = Field(description="the reason of the operator who granted or denied it")
    created_at: datetime
    decided_at: datetime | None


class ApprovalRead(ApprovalBrief):
    """A request as operators see it."""

    kind: RequestKind
    job_id: str | None
    suite: str | None = Field(description="owner/name@version, for a suite's approval")
    partner: str | None
    grants_needed: int = Field(description="distinct operators who must grant it (EVALGATE_APPROVALS_TWO_OPERATORS)")
    decisions: list[DecisionRead]


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, description="why: recorded on the audit log")


class SuiteApproval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000, description="why: recorded on the audit log")
