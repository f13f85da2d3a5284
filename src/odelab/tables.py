"""Mean ± std over seeds, the one computation of both (sweep summaries, claim verdicts)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), ignoring None, NaN and inf."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), (float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0)


def fmt_mean_std(values: Sequence[float], digits: int = 3, spec: str | None = None) -> str:
    """`mean ± std` (`digits` significant, or the format `spec` for both); one value alone."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    mean_spec, std_spec = (spec, spec) if spec else (f".{digits}g", f".{digits - 1}g")
    if not spec and abs(mean) >= 10**digits:  # whole numbers (NFE, counts): no exponent
        mean_spec, std_spec = ".0f", ".0f"
    if sum(v is not None and math.isfinite(v) for v in values) == 1:
        return f"{mean:{mean_spec}}"
    return f"{mean:{mean_spec}} ± {std:{std_spec}}"
