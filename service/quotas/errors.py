"""Refusals at admission: each budget that would be overspent, with what fits instead."""

from __future__ import annotations

from service.errors import Forbidden, NotFound, ServiceUnavailable, TooManyRequests


class PrivacyBudgetExhausted(Forbidden):
    """The job's ε would overspend the partner's budget for this dataset version. `alternatives`
    says what fits: fewer noised metrics, a smaller ε per metric, a larger budget from the
    operator, other dataset versions with budget left."""

    code = "privacy_budget_exhausted"


class LeakageBudgetExhausted(TooManyRequests):
    """The bits the job's ending can carry do not fit in what is left of the partner's daily cap.
    Retry after the reset (`Retry-After`), or request fewer metrics."""

    code = "leakage_budget_exhausted"


class LifetimeLeakageExhausted(Forbidden):
    """The bits the job's ending can carry do not fit in what is left of a lifetime budget: the
    partner's for this dataset or model version (or every partner's together, where the operator
    pools them). It never resets; `alternatives` says what fits."""

    code = "lifetime_leakage_exhausted"


class LifetimeRowsExhausted(Forbidden):
    """The model rows the partner may have predicted by this model version over its lifetime are spent."""

    code = "lifetime_rows_exhausted"


class DailyQueryBudgetExhausted(TooManyRequests):
    """The partner's model rows for today are spent; they reset at 00:00 UTC (`Retry-After`)."""

    code = "daily_query_budget_exhausted"


class ReleaseRateExceeded(TooManyRequests):
    """The partner has had as many releases as its window allows; retry when the window moves on
    (`Retry-After`)."""

    code = "release_rate_exceeded"


class TooManyConcurrentJobs(TooManyRequests):
    """The partner has as many jobs in progress as it may; wait for one to end, or cancel one."""

    code = "too_many_concurrent_jobs"


class AdmissionBusy(TooManyRequests):
    """Another submission of the same partner is being admitted; retry in a moment."""

    code = "admission_busy"


class PartnerRequired(NotFound):
    """Only partners have budgets: an operator names one with `?partner=`."""

    code = "partner_required"


class PartnerNotFound(NotFound):
    """No partner of that name."""

    code = "partner_not_found"


class RateLimiterUnavailable(ServiceUnavailable):
    """The store that counts the partners' budgets and rates (Redis) does not answer. A job is never
    admitted without its limits checked, so submissions wait until it is back; reads of jobs and
    results go on. Retry after `Retry-After` seconds."""

    code = "rate_limiter_unavailable"


class TwinQuotaExhausted(TooManyRequests):
    """The partner has run as many jobs on synthetic twins today as its `twin_jobs_per_day` allows
    (they spend no ε, bits, model rows or release slot, only this). Retry after 00:00 UTC
    (`Retry-After`), or run the suite on your own machine with `evalgate dev run`, which has no quota."""

    code = "twin_quota_exhausted"
