"""Policies as the API reads and writes them. An `...Update` is the whole of what the operator sets
(PUT): a field left out or null keeps, or goes back to, the deployment's default."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service.config import Mechanism, PartnerLimits
from service.release.privacy import MIN_EPSILON

ASSET = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(@[A-Za-z0-9][A-Za-z0-9_.+-]{0,31})?$"
AssetName = Annotated[str, Field(pattern=ASSET)]
Reason = Field(max_length=1000, description="why: recorded with the change on the audit log")
# An ε per metric an operator sets now is at least MIN_EPSILON (budgets count millionths of ε; see
# service.release.privacy). Only the `...Update` bodies say so: the `...Values` are also what was set
# before, read back, and a value set then must stay readable (and replaceable).
EpsilonPerMetric = Field(
    default=None, ge=MIN_EPSILON, le=1e3, description=f"ε per noised metric, at least {MIN_EPSILON:g}"
)


class PartnerPolicyValues(BaseModel):
    """What an operator set for one partner; null: the default."""

    model_config = ConfigDict(extra="forbid")

    public_name: str | None = Field(default=None, min_length=1, max_length=128, description="shown with results")
    rows_per_day: int | None = Field(default=None, ge=0, le=10**12)
    max_query_budget: int | None = Field(default=None, ge=1, le=10**12)
    epsilon_budget: float | None = Field(default=None, ge=0, le=1e6)
    max_epsilon_per_metric: float | None = Field(default=None, gt=0, le=1e3)
    bits_per_day: float | None = Field(default=None, ge=0, le=1e12)
    releases_per_window: int | None = Field(default=None, ge=0, le=10**9)
    max_concurrent_jobs: int | None = Field(default=None, ge=0, le=10**6)
    hard_rule_trips_per_day: int | None = Field(
        default=None, ge=1, le=10**6, description="hard-rule trips per UTC day before an automatic suspension"
    )
    twin_jobs_per_day: int | None = Field(
        default=None, ge=0, le=10**6, description="jobs on synthetic twins per UTC day (no other budget is spent)"
    )
    models: list[AssetName] | None = Field(
        default=None,
        max_length=500,
        description="models the partner may use (`name` for every version, or `name@version`); null: all",
    )
    datasets: list[AssetName] | None = Field(default=None, max_length=500, description="datasets likewise; null: all")


class PartnerPolicyUpdate(PartnerPolicyValues):
    max_epsilon_per_metric: float | None = EpsilonPerMetric
    reason: str = Reason


class PartnerPolicyRead(BaseModel):
    partner: str
    version: int = Field(description="counts the changes; the ETag")
    public_name: str
    limits: PartnerLimits = Field(description="what applies now: the operator's values, else the defaults")
    models: list[str] | None = Field(description="models the partner may use; null: all")
    datasets: list[str] | None = Field(description="datasets the partner may use; null: all")
    set: PartnerPolicyValues = Field(description="what an operator set (null: the default)")
    updated_at: datetime | None


class PartnerPolicyChange(BaseModel):
    """One recorded change of a partner's (or a dataset version's) policy, as the audit log holds it."""

    version: int = Field(description="the policy's version after the change")
    at: datetime
    actor: str = Field(description="who changed it")
    reason: str
    changed: list[str] = Field(description="the fields whose value changed")
    old: dict[str, Any] = Field(description="what was set before (null: the default)")
    new: dict[str, Any] = Field(description="what was set after")


class DatasetRules(BaseModel):
    """What applies to jobs on one dataset version."""

    model_config = ConfigDict(frozen=True)

    dp_mechanism: Mechanism
    epsilon_per_metric: float = Field(description="ε per noised metric when a job asks for none")
    max_epsilon_per_metric: float = Field(description="the most ε a job may spend per noised metric")
    epsilon_budget: float = Field(description="ε per partner on this dataset version, for ever")
    suppress_below_rows: int = Field(description="a metric on fewer rows is withheld")
    suppress_below_class_rows: int = Field(description="... or with a smaller class")
    min_dataset_rows: int = Field(description="a dataset version with fewer rows takes no jobs")


class DatasetPolicyValues(BaseModel):
    """What an operator set for one dataset version; null: the default."""

    model_config = ConfigDict(extra="forbid")

    dp_mechanism: Mechanism | None = None
    epsilon_per_metric: float | None = Field(default=None, gt=0, le=1e3)
    max_epsilon_per_metric: float | None = Field(default=None, gt=0, le=1e3)
    epsilon_budget: float | None = Field(default=None, ge=0, le=1e6)
    suppress_below_rows: int | None = Field(default=None, ge=1, le=10**9)
    suppress_below_class_rows: int | None = Field(default=None, ge=1, le=10**9)
    min_dataset_rows: int | None = Field(default=None, ge=1, le=10**9)


class DatasetPolicyUpdate(DatasetPolicyValues):
    epsilon_per_metric: float | None = EpsilonPerMetric
    max_epsilon_per_metric: float | None = EpsilonPerMetric
    reason: str = Reason


class DatasetPolicyRead(BaseModel):
    dataset: str
    version: int = Field(description="counts the changes; the ETag")
    rules: DatasetRules = Field(description="what applies now: the operator's values, else the defaults")
    set: DatasetPolicyValues = Field(description="what an operator set (null: the default)")
    updated_at: datetime | None


class PolicyRuleRead(BaseModel):
    """One rule of the policy catalogue (`GET /v1/policies`)."""

    id: str = Field(description="named by every refusal it causes (`rule`)")
    stage: str = Field(description="where it applies: admission, gate, sidecar or governance")
    rationale: str
    parameters: dict[str, Any] = Field(
        description="the deployment's defaults; a partner's and a dataset version's own are in their policies"
    )
    errors: list[str] = Field(description="the refusal codes it answers with")
    outcomes: list[str] = Field(description="the job endings (error classes) it causes")
