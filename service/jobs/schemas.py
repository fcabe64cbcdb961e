from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.approvals.schemas import ApprovalBrief
from service.jobs.states import JobState, JobTarget
from service.quotas.schemas import BudgetLeft
from service.registry.schemas import LicenseRead
from service.release.outcomes import ErrorClass
from service.release.privacy import MIN_EPSILON


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory_mb: int | None = Field(default=None, ge=64)
    cpus: float | None = Field(default=None, gt=0)
    timeout_s: int | None = Field(default=None, ge=1)
    query_budget: int | None = Field(default=None, ge=1, description="model rows the job may predict")


_SLICE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# Every string a caller sends is bounded. Besides the bound itself, a constrained `str` is checked as
# Unicode text by pydantic, so a lone surrogate (JSON "\ud800") is refused here as `invalid_request`;
# a bare `str` let it through to the registry's queries and the audit log, neither of which can
# encode it (a 500). A reference's name and version are checked by the registry (`invalid_reference`,
# or an unknown version with the closest names), so the bound leaves room and no pattern is imposed.
REFERENCE_MAX = 200  # name (64) @ version (32), or owner/name@version for a suite
MetricName = Annotated[str, Field(max_length=128)]  # metric (64), or metric@slice (64 + 1 + 32)


class Predicate(BaseModel):
    """One condition on a feature: the slice holds the rows where all of its predicates hold."""

    model_config = ConfigDict(extra="forbid")

    feature: int = Field(ge=0, le=100_000, description="the feature's column in x")
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float = Field(allow_inf_nan=False)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str = Field(
        max_length=REFERENCE_MAX,
        examples=["classification@2.0.0", "acme/my-suite@1.0.0"],
        description="owner/name@version, or name@version: your own suite of that name if you have one, "
        "else the built-in one",
    )
    model: str = Field(max_length=REFERENCE_MAX, examples=["demo-classifier@1"], description="name@version")
    dataset: str = Field(max_length=REFERENCE_MAX, examples=["demo-blobs@1"], description="name@version")
    metrics: list[MetricName] = Field(min_length=1, max_length=64, description="names, or metric@slice in rows mode")
    resources: Resources = Field(default_factory=Resources)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    slices: dict[str, list[Predicate]] = Field(
        default_factory=dict,
        max_length=8,
        description="rows-mode suites: named slices of the rows (all predicates hold); ask `metric@slice`",
    )

    @field_validator("slices")
    @classmethod
    def _slices(cls, v: dict[str, list[Predicate]]) -> dict[str, list[Predicate]]:
        for name, predicates in v.items():
            if not _SLICE_NAME.match(name):
                raise ValueError(f"slice name {name!r} must be 1-32 of a-z 0-9 _ starting with a letter")
            if not 1 <= len(predicates) <= 8:
                raise ValueError(f"slice {name!r} needs 1 to 8 predicates")
        return v

    output: str | None = Field(
        default=None,
        max_length=256,
        description="rows-mode suites: the model output to read (default: its one score output, else its labels)",
    )
    epsilon: float | None = Field(
        default=None,
        ge=MIN_EPSILON,
        le=100,
        description=f"differential-privacy ε per noised metric, at least {MIN_EPSILON:g} (budgets count millionths); "
        "the policy default if unset",
    )
    request_approval: bool = Field(
        default=False,
        description="if the job asks for more than your policy allows (ε per metric, query budget, a model or "
        "dataset not yet yours), wait in `awaiting_approval` for an operator instead of being refused",
    )
    approval_note: str | None = Field(default=None, max_length=1000, description="why, for the operator who decides")
    target: JobTarget = Field(
        default=JobTarget.REAL,
        description="`twin`: run on the dataset's synthetic twin beside the model's stand-in, in the same sandbox; "
        "spends no ε, bits, model rows or release slot (a small daily quota of twin jobs instead), releases "
        "nothing, and shows you the job's stdout, stderr and the release gate's verdict",
    )


class ResultRead(BaseModel):
    metrics: dict[str, float]
    disclosure: dict[Any, Any] = Field(
        description="withheld metrics and why, noise parameters per metric, bits charged"
    )
    provenance: dict[Any, Any]
    attestation: dict[Any, Any]
    released_at: datetime


class TwinVerdict(BaseModel):
    """What the release gate would do with a twin job's result, by the same code as a real job's."""

    outcome: Literal["released", "rejected", "failed"] = Field(
        description="released: the values it would release; rejected: the gate's rule the result broke; "
        "failed: the job ended without a result (its error class)"
    )
    error_class: ErrorClass | None = None
    reason: str | None = Field(default=None, description="why it would be rejected or failed")
    metrics: dict[str, float] = Field(default_factory=dict, description="values from the twin, not the real data")
    disclosure: dict[str, Any] = Field(
        default_factory=dict, description="withheld metrics and why, noise per metric, bits a real job would carry"
    )
    would_cost: dict[str, Any] = Field(
        default_factory=dict, description="what the same job on the real data would spend: ε and bits"
    )


class TwinRun(BaseModel):
    """A twin job's own output and verdict: nothing private went into them, so none is hidden or padded."""

    stdout: str = Field(description="the job's stdout, capped")
    stderr: str = Field(description="the job's stderr (a traceback), capped")
    exit_code: int | None = None
    oom: bool = False
    timed_out: bool = False
    usage: dict[str, Any] = Field(default_factory=dict, description="the sidecar's count of the stand-in's use")
    verdict: TwinVerdict | None = Field(default=None, description="the release gate's verdict, once it has judged")


class JobRead(BaseModel):
    id: str
    state: JobState
    error_class: ErrorClass | None
    advice: str | None = Field(default=None, description="what to do about the error class (a fixed sentence)")
    spec: dict[Any, Any]
    spec_sha256: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: ResultRead | None = None
    reused: bool = Field(
        default=False, description="an earlier job for the same release, returned instead of fresh noise"
    )
    approval: ApprovalBrief | None = Field(
        default=None, description="its request above policy, if it made one: what it asked, the decision and why"
    )
    licenses: dict[str, LicenseRead | None] = Field(
        default_factory=dict, description="the license terms of its model and dataset versions, as set now"
    )
    target: JobTarget = Field(default=JobTarget.REAL, description="what it ran on: the versions, or their twins")
    twin: TwinRun | None = Field(
        default=None, description="twin jobs only: the job's output and the gate's verdict (a real job's never shows)"
    )


class JobList(BaseModel):
    jobs: list[JobRead]


class JobCost(BaseModel):
    """What a job would spend if it runs."""

    epsilon_per_metric: float
    epsilon_total: float = Field(description="ε charged on the dataset version: per metric × noised metrics")
    noised_metrics: list[str]
    leakage_bits: float = Field(description="the most its release or its ending can carry, charged today")
    model_rows: int = Field(description="model rows asked for (its query budget)")
    model_rows_granted: int = Field(description="what today's and the lifetime row budgets would grant of them")


class Refusal(BaseModel):
    """The refusal a submission would get now: its stable code, why, and what to do instead."""

    error: str
    detail: str
    alternatives: list[str]


class JobPreview(BaseModel):
    """A dry run (`POST /v1/jobs?dry_run=true`): nothing was recorded, reserved or counted."""

    dry_run: Literal[True] = True
    admitted: bool = Field(description="whether the job would be admitted now")
    state: JobState | None = Field(default=None, description="the state it would enter: queued, or awaiting approval")
    reuses: str | None = Field(default=None, description="the earlier job of the same release it would return")
    cost: JobCost
    left: BudgetLeft | None = Field(default=None, description="what would be left after it (none spent on a reuse)")
    refusal: Refusal | None = None
    twin_jobs_left: int | None = Field(
        default=None, description="twin target only: twin jobs left today after this one (it spends nothing else)"
    )
