from __future__ import annotations

from pydantic import BaseModel, Field


class DailyRead(BaseModel):
    used: float
    limit: float
    left: float
    resets_in_s: int


class EpsilonRead(BaseModel):
    dataset: str
    spent: float
    budget: float
    left: float


class ReleasesRead(BaseModel):
    limit: int
    left: int
    window_s: int
    resets_in_s: int


class ConcurrencyRead(BaseModel):
    active: int
    limit: int


class BudgetRead(BaseModel):
    partner: str
    leakage_bits: DailyRead = Field(description="bits released values, outcomes and times may carry, per UTC day")
    model_rows: DailyRead = Field(description="rows the model may predict for your jobs, per UTC day")
    epsilon: list[EpsilonRead] = Field(description="differential-privacy ε per dataset version (never resets)")
    epsilon_budget_per_dataset: float
    epsilon_per_metric_default: float
    epsilon_per_metric_max: float
    releases: ReleasesRead
    concurrent_jobs: ConcurrencyRead
