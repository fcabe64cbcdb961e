"""Errors of job submission and control."""

from __future__ import annotations

from service.errors import Conflict, NotFound, Unprocessable


class JobNotFound(NotFound):
    """No job with that id that the caller may see (another partner's job is 'not found' too)."""

    code = "job_not_found"


class JobFinished(Conflict):
    """The job has already ended (as it says); it cannot be cancelled."""

    code = "job_finished"


class RealJobInProgress(Conflict):
    """A twin job is refused while one of the partner's real jobs is in progress, as the partner sees
    it (until its padded completion time), and a real job while one of its twin jobs has not ended:
    the two never run at once, so a twin job's output cannot carry what a real job beside it does
    to the host it shares (its CPU, its caches). Retry when it has ended."""

    code = "real_job_in_progress"


class TwinJobInProgress(Conflict):
    """A real job is refused while one of the partner's twin jobs has not ended (see
    RealJobInProgress). Retry when it has ended, or cancel it."""

    code = "twin_job_in_progress"


class UndeclaredMetric(Unprocessable):
    """A requested metric is not declared by the suite, or is asked twice; `alternatives` lists the
    suite's metrics."""

    code = "undeclared_metric"


class MetricNeedsProbabilities(Unprocessable):
    """A requested metric needs class probabilities, and the model output read gives labels only;
    `alternatives` lists the metrics labels give."""

    code = "metric_needs_probabilities"


class ReleaseExceedsLeakageCap(Unprocessable):
    """A release of the requested metrics could carry more bits than one release may
    (`EVALGATE_RELEASE_MAX_BITS`); request fewer metrics."""

    code = "release_exceeds_leakage_cap"


class InvalidSlice(Unprocessable):
    """A slice names a feature the dataset lacks, a metric names a slice the job does not define, or
    the suite reports its own metrics (slices are for rows mode)."""

    code = "invalid_slice"


class ResourcesExceedLimit(Unprocessable):
    """A requested resource (memory, CPUs, time, query budget) is above the caller's ceiling;
    `alternatives` gives each ceiling."""

    code = "resources_exceed_limit"


class EpsilonAbovePolicy(Unprocessable):
    """The requested ε per metric is above the partner's policy; `alternatives` gives the ceiling."""

    code = "epsilon_above_policy"
