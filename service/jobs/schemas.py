from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.jobs.states import JobState
from service.release.outcomes import ErrorClass


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory_mb: int | None = Field(default=None, ge=64)
    cpus: float | None = Field(default=None, gt=0)
    timeout_s: int | None = Field(default=None, ge=1)
    query_budget: int | None = Field(default=None, ge=1, description="model rows the job may predict")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str = Field(examples=["classification@1.1.1"])
    model: str = Field(examples=["demo-classifier@1"])
    dataset: str = Field(examples=["demo-blobs@1"])
    metrics: list[str] = Field(min_length=1, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    output: str | None = Field(
        default=None,
        max_length=256,
        description="rows-mode suites: the model output to read (default: its one score output, else its labels)",
    )
    epsilon: float | None = Field(
        default=None, gt=0, le=100, description="differential-privacy ε per noised metric; the policy default if unset"
    )


class ResultRead(BaseModel):
    metrics: dict[str, float]
    disclosure: dict[Any, Any] = Field(
        description="withheld metrics and why, noise parameters per metric, bits charged"
    )
    provenance: dict[Any, Any]
    attestation: dict[Any, Any]
    released_at: datetime


class JobRead(BaseModel):
    id: str
    state: JobState
    error_class: ErrorClass | None
    spec: dict[Any, Any]
    spec_sha256: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: ResultRead | None = None
    reused: bool = Field(
        default=False, description="an earlier job for the same release, returned instead of fresh noise"
    )


class JobList(BaseModel):
    jobs: list[JobRead]
