"""Comparisons a report may state: a 95 % interval of the difference and a computed verdict.

Every comparison sentence in a report comes from `compare`, never from prose:
the interval is Student's t over seeds (paired when both sides ran the same
seeds, Welch's otherwise), and a verdict says "within noise" whenever the
interval holds zero.
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
    def significant(self) -> bool:
        return math.isfinite(self.low) and (self.low > 0 or self.high < 0)

    @property
    def outcome(self) -> str:
        """`better`, `worse` (for `a`) or `within noise`; `n/a` without an interval."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "n/a"
        if not self.significant:
            return "within noise"
        a_higher = self.low > 0
        return "better" if a_higher == self.higher_is_better else "worse"

    def interval_text(self, spec: str = ".3g") -> str:
        if not math.isfinite(self.low):
            return "n/a"
        return f"[{self.low:{spec}}, {self.high:{spec}}]"

    def cells(self, spec: str = ".3g") -> list[str]:
        """Table cells: difference, interval, n, outcome."""
        return [f"{self.mean_diff:{spec}}", self.interval_text(spec), str(self.n), self.outcome]

    @property
    def verdict(self) -> str:
        """One sentence stating the comparison and how sure it is."""
        kind = "paired" if self.paired else "per side"
        detail = (
            f"difference {self.mean_diff:.3g}, {LEVEL:.0%} CI {self.interval_text()}, "
            f"n = {self.n} {kind}"
        )
        if self.outcome == "n/a":
            return (
                f"{self.a_name} vs {self.b_name} on {self.metric}: too few runs for an interval "
                f"({detail})."
            )
        if self.outcome == "within noise":
            return f"{self.a_name} and {self.b_name} are within noise on {self.metric} ({detail})."
        direction = "higher" if self.low > 0 else "lower"
        quality = "better" if self.outcome == "better" else "worse"
        return (
            f"{self.a_name} has a {direction} ({quality}) {self.metric} than {self.b_name} "
            f"({detail})."
        )


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


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

    `paired=True` pairs `a[i]` with `b[i]` (same seed or same example); pairs with
    a missing side are dropped. Unpaired uses Welch's interval. Fewer than two
    values (pairs) on a side give an infinite interval, reported as `n/a`.
    """
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")
        pairs = [
            (x, y)
            for x, y in zip(a, b, strict=True)
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
        ]
        diffs = np.array([x - y for x, y in pairs], dtype=float)
        n = len(diffs)
        mean = float(diffs.mean()) if n else math.nan
        if n < 2:
            low = high = math.nan
        elif np.allclose(diffs, diffs[0]):
            low = high = mean  # no spread: the interval is the point
        else:
            ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(LEVEL)
            low, high = float(ci.low), float(ci.high)
    else:
        xa, xb = _finite(a), _finite(b)
        n = min(len(xa), len(xb))
        mean = float(xa.mean() - xb.mean()) if n else math.nan
        if len(xa) < 2 or len(xb) < 2:
            low = high = math.nan
        elif np.ptp(xa) == 0 and np.ptp(xb) == 0:
            low = high = mean
        else:
            ci = stats.ttest_ind(xa, xb, equal_var=False).confidence_interval(LEVEL)
            low, high = float(ci.low), float(ci.high)
    return Comparison(a_name, b_name, metric, mean, low, high, n, paired, higher_is_better)


def proportion_diff(
    a_correct: Sequence[bool],
    b_correct: Sequence[bool],
    *,
    a_name: str,
    b_name: str,
    metric: str = "accuracy",
) -> Comparison:
    """Accuracy difference over the same examples, paired per example.

    The interval is the t-interval of the per-example differences (each -1, 0 or 1),
    which for a few hundred examples or more matches the normal interval of a
    paired difference of proportions.
    """
    a_arr = np.asarray(a_correct, dtype=float)
    b_arr = np.asarray(b_correct, dtype=float)
    return compare(
        list(a_arr),
        list(b_arr),
        a_name=a_name,
        b_name=b_name,
        metric=metric,
        higher_is_better=True,
        paired=True,
    )


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
