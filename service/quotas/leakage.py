"""Leakage in bits: what a job's ending can carry.

A job reserves, at admission, the most its ending can carry: which outcome it had, whether its code
abused the model channel (a trip its partner learns of when a later submission is refused for its
trips), which padded completion time, and each metric's value or reason for being withheld (see
release.gate). A job
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


# A protocol-abuse trip is taken whatever the job's ending (service.sanctions), so it doubles the endings.
CHANNEL_TRIP = 2


def outcome_bits(settings: Settings) -> float:
    """Released or one of the error classes, with a protocol-abuse trip or without, and one of the
    padded completion times."""
    return gate.outcome_bits(
        (len(ErrorClass) + 1) * CHANNEL_TRIP,
        timing.distinct_durations(settings.timing_buckets_s, settings.longest_job_s),
    )


def job_bits(settings: Settings, metric_bits: float) -> float:
    return metric_bits + outcome_bits(settings)
