"""The policy catalogue: every rule admission, the release gate, the sidecar and governance apply,
with its parameters (the deployment's defaults; an operator's per-partner and per-dataset values are
in the policies themselves) and why it is there. `GET /v1/policies` lists it for every role.

Each rule names the error codes its refusals carry (`errors`) and the job endings it causes
(`outcomes`); importing this module gives each of those error classes its rule's id, so every
refusal names the rule it came from (`{"error", "detail", "alternatives", "rule"}`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from service.config import Settings
from service.errors import EvalgateError
from service.jobs import errors as job_errors
from service.policies import errors as policy_errors
from service.quotas import errors as quota_errors
from service.registry import errors as registry_errors
from service.release.outcomes import ErrorClass
from service.sanctions import errors as sanction_errors
from service.sanctions.models import Rule as TripRule

Stage = Literal["admission", "gate", "sidecar", "governance"]


@dataclass(frozen=True)
class Rule:
    id: str
    stage: Stage
    rationale: str
    parameters: Callable[[Settings], dict[str, Any]]
    errors: tuple[type[EvalgateError], ...] = ()
    outcomes: tuple[ErrorClass, ...] = field(default=())


RULES: tuple[Rule, ...] = (
    Rule(
        "jobs_in_progress",
        "admission",
        "one partner cannot starve the others of workers",
        lambda s: {"max_concurrent_jobs": s.max_concurrent_jobs},
        (quota_errors.TooManyConcurrentJobs, quota_errors.AdmissionBusy),
    ),
    Rule(
        "twin_jobs_per_day",
        "admission",
        "jobs on synthetic twins spend no privacy budget, so a daily count bounds the workers they take",
        lambda s: {"twin_jobs_per_day": s.twin_jobs_per_day},
        (quota_errors.TwinQuotaExhausted,),
    ),
    Rule(
        "model_rows_per_day",
        "admission",
        "bounds how much of a model one partner can query (extraction) in a day, across jobs",
        lambda s: {"rows_per_day": s.partner_rows_per_day},
        (quota_errors.DailyQueryBudgetExhausted,),
    ),
    Rule(
        "job_resources",
        "admission",
        "a job's memory, CPUs, time and model queries are bounded before it runs",
        lambda s: {
            "max_memory_mb": s.max_memory_mb,
            "max_cpus": s.max_cpus,
            "max_timeout_s": s.max_timeout_s,
            "max_query_budget": s.max_query_budget,
        },
        (job_errors.ResourcesExceedLimit,),
    ),
    Rule(
        "epsilon_per_metric",
        "admission",
        "differential privacy: the noise on each metric is at least that of this ε",
        lambda s: {
            "epsilon_per_metric": s.dp_epsilon_per_metric,
            "max_epsilon_per_metric": s.dp_max_epsilon_per_metric,
        },
        (job_errors.EpsilonAbovePolicy,),
    ),
    Rule(
        "epsilon_budget",
        "admission",
        "bounds what all of a partner's releases on a dataset version reveal about any one row, for ever",
        lambda s: {"epsilon_budget": s.dp_epsilon_budget},
        (quota_errors.PrivacyBudgetExhausted,),
    ),
    Rule(
        "bits_per_day",
        "admission",
        "everything a job's ending can carry is charged in bits against a daily cap",
        lambda s: {"bits_per_day": s.leakage_bits_per_day},
        (quota_errors.LeakageBudgetExhausted,),
    ),
    Rule(
        "lifetime_caps",
        "admission",
        "no partner learns more than a fraction of what a dataset or model holds, over its lifetime",
        lambda s: {
            "dataset_lifetime_fraction": s.dataset_lifetime_fraction,
            "model_lifetime_fraction": s.model_lifetime_fraction,
            "pooled_lifetime_fraction": s.pooled_lifetime_fraction,
            "model_lifetime_rows_per_parameter": s.model_lifetime_rows_per_parameter,
        },
        (quota_errors.LifetimeLeakageExhausted, quota_errors.LifetimeRowsExhausted),
    ),
    Rule(
        "bits_per_release",
        "admission",
        "one release cannot carry more than a fixed number of bits, whatever the budgets left",
        lambda s: {"release_max_bits": s.release_max_bits, "metric_max_bits": s.metric_max_bits},
        (job_errors.ReleaseExceedsLeakageCap,),
    ),
    Rule(
        "release_rate",
        "admission",
        "bursts of releases cannot outrun the daily caps",
        lambda s: {"releases_per_window": s.releases_per_window, "release_window_s": s.release_window_s},
        (quota_errors.ReleaseRateExceeded,),
    ),
    Rule(
        "asset_access",
        "admission",
        "a partner uses only the models and datasets its policy names",
        lambda s: {"default": "every registered model and dataset"},
        (policy_errors.ModelNotAllowed, policy_errors.DatasetNotAllowed),
    ),
    Rule(
        "smallest_dataset",
        "admission",
        "aggregates over few rows say too much about each row",
        lambda s: {"min_dataset_rows": s.min_dataset_rows},
        (registry_errors.DatasetTooSmall,),
    ),
    Rule(
        "retired_models",
        "admission",
        "a retired model version takes no new jobs",
        lambda s: {"lifecycle": "active → deprecated → retired"},
        (registry_errors.ModelRetired,),
    ),
    Rule(
        "retired_datasets",
        "admission",
        "a retired dataset version takes no new jobs",
        lambda s: {"lifecycle": "active → deprecated → retired"},
        (registry_errors.DatasetRetired,),
    ),
    Rule(
        "result_format",
        "gate",
        "a result is exactly the declared metrics, typed, finite and in range: nothing else can ride along",
        lambda s: {"result_max_bytes": s.result_max_bytes, "max_metrics": s.max_metrics},
        outcomes=(ErrorClass.OUTPUT_REJECTED, ErrorClass.MISSING_OUTPUT),
    ),
    Rule(
        "small_cells",
        "gate",
        "a metric computed on few rows (or a small class) is withheld",
        lambda s: {
            "suppress_below_rows": s.suppress_below_rows,
            "suppress_below_class_rows": s.suppress_below_class_rows,
        },
    ),
    Rule(
        "noise_and_grid",
        "gate",
        "released values are noised (OpenDP) and rounded to a grid, so they carry a bounded number of bits",
        lambda s: {
            "dp_mechanism": s.dp_mechanism,
            "dp_noised_kinds": list(s.dp_noised_kinds),
            "dp_delta": s.dp_delta,
            "release_decimals": s.release_decimals,
        },
    ),
    Rule(
        "padded_times",
        "gate",
        "a job's state changes for its partner only at padded times, so timing carries only the bucket",
        lambda s: {"timing_buckets_s": list(s.timing_buckets_s)},
    ),
    Rule(
        "model_queries",
        "sidecar",
        "a job queries the model only within its budget and rate",
        lambda s: {
            "max_requests_per_job": s.max_requests_per_job,
            "max_batch_rows": s.max_batch_rows,
            "max_requests_per_s": s.max_requests_per_s,
        },
        outcomes=(ErrorClass.QUERY_BUDGET_EXCEEDED,),
    ),
    Rule(
        "custom_code_approval",
        "governance",
        "partner code that may see labels runs only once an operator approved it",
        lambda s: {
            "custom_suites_require_approval": s.custom_suites_require_approval,
            "approvals_two_operators": s.approvals_two_operators,
        },
    ),
    Rule(
        "sanctions",
        "governance",
        "a partner whose jobs trip hard rules too often in a day is suspended until an operator lifts it",
        lambda s: {
            "hard_rule_trips_per_day": s.hard_rule_trips_per_day,
            "trips": [str(r) for r in TripRule],
        },
        (sanction_errors.PartnerSuspended,),
    ),
)


def _name_rules() -> None:
    for rule in RULES:
        for error in rule.errors:
            error.rule = rule.id


_name_rules()


def rule_of(code: str | None) -> str | None:
    """The rule a refusal code comes from, if it comes from one."""
    for rule in RULES:
        if any(e.code == code for e in rule.errors):
            return rule.id
    return None
