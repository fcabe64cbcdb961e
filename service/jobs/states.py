"""The job state machine's states and moves. Pure data: every module that names a state imports it
from here (the transition itself, which writes the ledger, is jobs.service.transition).

    submitted ─▶ awaiting_approval ─▶ queued ─▶ running ─▶ gating ─▶ released
        │                │              │          │          └────▶ rejected | failed | cancelled
        └────────────────┴──────────────┴──────────┴─────▶ cancelled | failed

A reproduction's run (service.reproductions: a job row with `reproduces` set) never releases: where a
job would be released, it ends `compared` (its raw result was compared with the original's; the
reproduction records how).

A twin job (target `twin`, service.jobs.twin) runs on a dataset's synthetic twin beside a model's
stand-in and never releases either: where a job would be released, it ends `judged` (the release
gate's verdict is recorded for its partner, with the job's output). Otherwise it ends as any job does.
"""

from __future__ import annotations

from enum import StrEnum

from service.release.outcomes import ErrorClass


class JobState(StrEnum):
    SUBMITTED = "submitted"
    AWAITING_APPROVAL = "awaiting_approval"  # a custom suite not yet approved by an operator
    QUEUED = "queued"
    RUNNING = "running"  # the sandbox is running (or about to)
    GATING = "gating"  # the sandbox stopped; its outcome is recorded; the release gate decides
    RELEASED = "released"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPARED = "compared"  # a reproduction's run whose raw result was compared with the original's
    JUDGED = "judged"  # a twin job whose result the gate would release: its verdict is shown, nothing released

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class JobTarget(StrEnum):
    """What a job runs on."""

    REAL = "real"  # the model and dataset versions themselves: budgets spent, a release made
    TWIN = "twin"  # their stand-in and synthetic twin: nothing private, nothing spent or released


TERMINAL = frozenset(
    {JobState.RELEASED, JobState.REJECTED, JobState.FAILED, JobState.CANCELLED, JobState.COMPARED, JobState.JUDGED}
)
# States a worker acts on; the others wait for an operator (or have ended).
RUNNABLE = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.GATING})
# The operators' queue: waiting for a worker, held by one (under its lease), ended without a release.
WAITING = frozenset({JobState.SUBMITTED, JobState.QUEUED})
IN_PROGRESS = frozenset({JobState.RUNNING, JobState.GATING})
ENDED_BADLY = frozenset({JobState.FAILED, JobState.REJECTED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.SUBMITTED: frozenset({JobState.AWAITING_APPROVAL, JobState.QUEUED, JobState.CANCELLED, JobState.FAILED}),
    JobState.AWAITING_APPROVAL: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.GATING, JobState.FAILED, JobState.CANCELLED}),
    JobState.GATING: frozenset(
        {JobState.RELEASED, JobState.REJECTED, JobState.FAILED, JobState.CANCELLED, JobState.COMPARED, JobState.JUDGED}
    ),
}

# A job that does not end in a release ends in the state its error class says.
ENDS: dict[ErrorClass, JobState] = {
    ErrorClass.TIMEOUT: JobState.FAILED,
    ErrorClass.OOM: JobState.FAILED,
    ErrorClass.CRASHED: JobState.FAILED,
    ErrorClass.QUERY_BUDGET_EXCEEDED: JobState.FAILED,
    ErrorClass.INTERNAL_ERROR: JobState.FAILED,
    ErrorClass.OUTPUT_REJECTED: JobState.REJECTED,
    ErrorClass.MISSING_OUTPUT: JobState.REJECTED,
    ErrorClass.CANCELLED: JobState.CANCELLED,
}


def end_state(error_class: ErrorClass | None, reproduction: bool = False, twin: bool = False) -> JobState:
    """Released (a reproduction's run: compared; a twin job: judged) when there is no error class;
    else the state the error class belongs to."""
    if error_class is None:
        return JobState.COMPARED if reproduction else JobState.JUDGED if twin else JobState.RELEASED
    return ENDS[error_class]
