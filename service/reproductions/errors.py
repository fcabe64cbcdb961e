"""Refusals of a reproduction request."""

from __future__ import annotations

from service.errors import Conflict, Forbidden, TooManyRequests


class ReproductionNotAllowed(Forbidden):
    """Reproductions are asked for by operators, and by researchers where the operator allows it
    (`EVALGATE_RESEARCHERS_MAY_REPRODUCE`); partners never ask (their own code would choose when)."""

    code = "reproduction_not_allowed"


class JobNotReleased(Conflict):
    """Only a released job can be reproduced: there is no released result to compare with."""

    code = "job_not_released"


class PartnersTwinJobRunning(Conflict):
    """The job's partner has a job on a synthetic twin that has not ended: a re-run of the partner's
    code on the real data never runs beside one, whose output its partner reads. Ask again later."""

    code = "partners_twin_job_running"


class ReproductionInProgress(Conflict):
    """A reproduction of this job is already on its way; read it at `GET /v1/jobs/{id}/reproductions`."""

    code = "reproduction_in_progress"


class ReproductionsExhausted(TooManyRequests):
    """This job has been reproduced as often as a job may be per UTC day
    (`EVALGATE_REPRODUCTIONS_PER_JOB_PER_DAY`); `Retry-After` says when the day ends."""

    code = "reproductions_exhausted"
