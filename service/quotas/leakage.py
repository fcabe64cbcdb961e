"""Leakage in bits: what a job's ending can carry.

A job reserves, at admission, the most its ending can carry: which outcome it had, which padded
completion time, and each metric's value or reason for being withheld (see release.gate). A job
that ran is charged all of it, whatever it reported: what it reports is its own choice, so the
channel is as wide as the choices. A job that never ran carries nothing.
"""

from __future__ import annotations

import math

from service.config import Settings
from service.release import gate, timing
from service.release.outcomes import ErrorClass


def to_millibits(bits: float) -> int:
    return math.ceil(round(bits * 1000, 6))


def outcome_bits(settings: Settings) -> float:
    """Released or one of the error classes, and one of the padded completion times."""
    return gate.outcome_bits(
        len(ErrorClass) + 1, timing.distinct_durations(settings.timing_buckets_s, settings.longest_job_s)
    )


def job_bits(settings: Settings, metric_bits: float) -> float:
    return metric_bits + outcome_bits(settings)
