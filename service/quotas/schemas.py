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


class LifetimeRead(BaseModel):
    asset: str = Field(description="dataset:name@version or model:name@version")
    resource: str = Field(description="bits (what releases may carry) or rows (model rows predicted)")
    used: float
    limit: float
    left: float
    derivation: str = Field(description="how the limit was set: the asset's size and the fraction, or by its operator")


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
    lifetime: list[LifetimeRead] = Field(
        description="what you have used of each asset you have used, over its lifetime (never resets)"
    )


class BudgetLeft(BaseModel):
    """What a job would leave of each budget if it were admitted now (a dry run)."""

    epsilon: float = Field(description="ε left on the job's dataset version")
    leakage_bits_today: float
    model_rows_today: int
    releases_in_window: int
    jobs_in_progress: int
    jobs_in_progress_limit: int
