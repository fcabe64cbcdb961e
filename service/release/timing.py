"""Completion times as partners see them: padded up to a bucket, so run time is not a side channel.

A job that ran looks unfinished to its partner until the padded time has passed, and then finishes
at exactly that time. Operators see the real times.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta


def padded_duration(elapsed_s: float, buckets: list[float]) -> float:
    """The first bucket at or above elapsed_s; past the last bucket, the next multiple of it."""
    for b in buckets:
        if elapsed_s <= b:
            return float(b)
    last = buckets[-1]
    return float(math.ceil(elapsed_s / last) * last)


def visible_at(submitted: datetime, finished: datetime, buckets: list[float]) -> datetime:
    return submitted + timedelta(seconds=padded_duration((finished - submitted).total_seconds(), buckets))


def distinct_durations(buckets: list[float], longest_s: float) -> int:
    """How many padded durations a job can end with: what its ending time can carry."""
    return len(buckets) + max(0, math.ceil(longest_s / buckets[-1]) - 1)
