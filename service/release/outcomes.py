"""What a partner may be told about a job that did not end in a release. Nothing else ever reaches
them: no output, no traceback, no exit code. Each class is one of the outcomes a job's ending can
carry, so their number is part of the bits charged for it (quotas.leakage)."""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    TIMEOUT = "timeout"  # the job ran past its wall-clock limit
    OOM = "oom"  # the job ran out of memory
    CRASHED = "crashed"  # the job exited with an error
    QUERY_BUDGET_EXCEEDED = "query_budget_exceeded"  # the model rows or requests ran out
    OUTPUT_REJECTED = "output_rejected"  # the result broke a rule of the release gate
    MISSING_OUTPUT = "missing_output"  # the job wrote no result
    CANCELLED = "cancelled"  # the partner (or an operator) cancelled it
    INTERNAL_ERROR = "internal_error"  # the service failed, not the job
