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


# What a partner can do about each ending, told with it. A fixed sentence per class: it carries
# nothing the class does not. The synthetic twin shows what the real data hides.
ADVICE: dict[ErrorClass, str] = {
    ErrorClass.TIMEOUT: "the job ran past its time limit: ask for more (resources.timeout_s), or predict in larger "
    "batches; `evalgate dev run` on the synthetic twin shows how long your code takes",
    ErrorClass.OOM: "the job ran out of memory: ask for more (resources.memory_mb), or hold fewer rows at once; "
    "`evalgate dev run` on the synthetic twin shows your code's peak",
    ErrorClass.CRASHED: "your code exited with an error: run the suite on the synthetic twin (`evalgate dev run`, "
    "or `evalgate submit --target twin` on the server) to see its traceback (real jobs never show one)",
    ErrorClass.QUERY_BUDGET_EXCEEDED: "your code asked the model for more rows or requests than the job's query "
    "budget: ask for more (resources.query_budget), or predict in batches; `evalgate dev run` shows the usage",
    ErrorClass.OUTPUT_REJECTED: "the result broke a rule of the release gate: `evalgate dev run` passes a result "
    "through the same gate and names the rule",
    ErrorClass.MISSING_OUTPUT: "your code wrote no result: run the suite on the synthetic twin (`evalgate dev run`, "
    "or `evalgate submit --target twin`) to see what it printed",
    ErrorClass.INTERNAL_ERROR: "the service failed, not your code; the operators have the details",
}
