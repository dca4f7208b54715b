"""Summary statistics of repeated timings: median, quartiles, minimum.

A benchmark repeats a call many times after warm-up and reports the median with its spread
(first and third quartiles) and the minimum, never a mean that one preempted repetition can drag.
Quantiles interpolate linearly between order statistics (Hyndman & Fan 1996, definition 7, the
default of numpy.percentile and R), so a reader can reproduce every figure by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of already sorted values: h = (n - 1) q, then interpolate
    between the floor(h)-th and ceil(h)-th order statistics (Hyndman & Fan, definition 7)."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    h = (len(sorted_values) - 1) * q
    low = math.floor(h)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (h - low) * (sorted_values[high] - sorted_values[low])


@dataclass(frozen=True)
class TimingStats:
    """Per-call times in microseconds."""

    median_us: float
    q1_us: float
    q3_us: float
    min_us: float
    max_us: float
    reps: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: the noise a ratio must beat."""
        return (self.q3_us - self.q1_us) / self.median_us if self.median_us else float("nan")


def summarize(samples_us: Iterable[float]) -> TimingStats:
    """Median, quartiles, minimum and maximum of timing samples (microseconds per call)."""
    values = sorted(float(v) for v in samples_us)
    if not values:
        raise ValueError("no timing samples to summarize")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError("timing samples must be finite and non-negative")
    return TimingStats(median_us=quantile(values, 0.5), q1_us=quantile(values, 0.25), q3_us=quantile(values, 0.75),
                       min_us=values[0], max_us=values[-1], reps=len(values))


def paired_speedup(baseline_us: Sequence[float], candidate_us: Sequence[float]) -> float:
    """Speedup of a candidate over a baseline timed alternately (A B A B ...) in one process:
    the ratio of the medians, each robust to the occasional slow repetition."""
    return summarize(baseline_us).median_us / summarize(candidate_us).median_us
