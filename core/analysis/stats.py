"""Means and 95 % Student-t intervals: the one place seed repeats become an interval.

    mean_ci([0.71, 0.74, 0.72])            -> Interval(mean=0.723, low=0.686, high=0.761, n=3)
    difference_ci(a, b, paired=True)       -> the interval of mean(a_i - b_i)
    difference_ci(a, b, paired=False)      -> Welch's interval of mean(a) - mean(b)

An interval needs at least two values (n - 1 >= 1 degrees of freedom); with fewer, ``low`` and
``high`` are None. Pure Python (no scipy): the two-sided 97.5 % quantiles of Student's t for 1-30
degrees of freedom are tabulated; beyond 30 the normal 1.96 is within 2 %.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

# Student's t, 0.975 quantile, df = 1..30 (any statistics table; e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)


def t975(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (a fractional Welch df is
    rounded down, which widens the interval slightly: the conservative side)."""
    if df < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {df}")
    k = int(math.floor(df))
    return T975[k - 1] if k <= len(T975) else 1.96


@dataclass(frozen=True)
class Interval:
    """A mean with its 95 % interval (None when n < 2) over n values; ``sd`` the sample standard deviation."""

    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


def mean_ci(values: Sequence[float]) -> Interval:
    """Mean of ``values`` and its 95 % Student-t interval, mean +- t(n-1) * sd / sqrt(n)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_ci needs at least one value")
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return Interval(m, None, None, len(vals))
    sd = statistics.stdev(vals)
    half = t975(len(vals) - 1) * sd / math.sqrt(len(vals))
    return Interval(m, m - half, m + half, len(vals), sd)


def difference_ci(a: Sequence[float], b: Sequence[float], *, paired: bool) -> Interval:
    """The 95 % interval of mean(a) - mean(b).

    ``paired``: a[i] and b[i] share a seed; the interval is mean_ci of the differences (n pairs).
    Otherwise Welch's: (ma - mb) +- t(df) * sqrt(va/na + vb/nb), df from the Welch-Satterthwaite
    formula; None bounds when either side has fewer than two values. n is the smaller sample size.
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    if not a or not b:
        raise ValueError("difference_ci needs values on both sides")
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired differences need equal lengths, got {len(a)} and {len(b)}")
        return mean_ci([x - y for x, y in zip(a, b)])
    diff = statistics.fmean(a) - statistics.fmean(b)
    n = min(len(a), len(b))
    if len(a) < 2 or len(b) < 2:
        return Interval(diff, None, None, n)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, n, 0.0)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t975(df) * se
    return Interval(diff, diff - half, diff + half, n, se * math.sqrt(n))
