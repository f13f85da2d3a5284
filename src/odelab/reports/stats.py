"""Comparisons a report may state: the 95 % interval of a difference, and exact binomial tests.

The interval is Student's t over seeds (paired when both sides ran the same seeds, Welch's
otherwise); an interval holding zero is "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Comparison:
    """`a - b` for one metric, over seeds."""

    a_name: str
    b_name: str
    metric: str
    mean_diff: float
    low: float
    high: float
    n: int
    paired: bool
    higher_is_better: bool

    @property
    def outcome(self) -> str:
        """`better`, `worse` (for `a`) or `within noise`; `n/a` without an interval."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "n/a"
        if self.low <= 0 <= self.high:
            return "within noise"
        return "better" if (self.low > 0) == self.higher_is_better else "worse"


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def compare(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    a_name: str,
    b_name: str,
    metric: str,
    higher_is_better: bool,
    paired: bool = True,
) -> Comparison:
    """Mean of `a - b` with its 95 % t-interval.

    `paired=True` pairs `a[i]` with `b[i]` (same seed or same example; per-example booleans
    give a paired accuracy difference); pairs with a missing side are dropped. Unpaired uses
    Welch's interval. Fewer than two values (pairs) on a side give a NaN interval (`n/a`).
    """
    if paired and len(a) != len(b):
        raise ValueError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")
    xa, xb = _array(a), _array(b)
    if paired:
        keep = np.isfinite(xa) & np.isfinite(xb)
        xa = xa[keep] - xb[keep]  # the differences
        n = len(xa)
        mean = float(xa.mean()) if n else math.nan
        few = n < 2
        flat = not few and np.allclose(xa, xa[0])
    else:
        xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
        n = min(len(xa), len(xb))
        mean = float(xa.mean() - xb.mean()) if n else math.nan
        few = len(xa) < 2 or len(xb) < 2
        flat = not few and np.ptp(xa) == 0 and np.ptp(xb) == 0
    if few:
        low = high = math.nan
    elif flat:
        low = high = mean  # no spread: the interval is the point
    else:
        test = stats.ttest_1samp(xa, 0.0) if paired else stats.ttest_ind(xa, xb, equal_var=False)
        ci = test.confidence_interval(LEVEL)
        low, high = float(ci.low), float(ci.high)
    return Comparison(a_name, b_name, metric, mean, low, high, n, paired, higher_is_better)


def binomial_interval(correct: int, n: int) -> tuple[float, float]:
    """The exact (Clopper-Pearson) 95 % interval, in %, of an accuracy read as
    `correct` of `n` images."""
    ci = stats.binomtest(correct, n).proportion_ci(LEVEL, method="exact")
    return 100 * float(ci.low), 100 * float(ci.high)


def resolvable(fewer_errors: int) -> bool:
    """Whether `fewer_errors` fewer misclassified images (of the same images) could be
    significant at 5 % under any pairing: the exact sign test (McNemar) at its most
    favourable, every changed image a fix (`fewer_errors` of `fewer_errors` discordant)."""
    return fewer_errors > 0 and stats.binomtest(fewer_errors, fewer_errors).pvalue < 0.05
