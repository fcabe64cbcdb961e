from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from service.auth.roles import Role
from service.release.outcomes import ErrorClass
from service.reproductions.models import CouldNotRun, Outcome


class ReproductionLog(BaseModel):
    """The reproduction's transparency-log entry: its index, and the record whose sha256 it holds."""

    leaf_index: int
    record: dict[str, Any]


class ReproductionRead(BaseModel):
    id: str
    job_id: str
    requested_by: str | None  # the requester's name; not shown to partners
    requester_role: Role
    requested_at: datetime
    outcome: Outcome | None  # None: on its way (for a partner: until its padded time)
    reason: CouldNotRun | None  # with could_not_run
    error_class: ErrorClass | None  # how the re-run ended, with run_failed; not shown to partners
    finished_at: datetime | None  # for a partner, the padded time
    log: ReproductionLog | None  # not shown to partners (the log is not theirs to read)


class ReproductionList(BaseModel):
    reproductions: list[ReproductionRead]
