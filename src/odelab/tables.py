"""Numbers as text: mean ± std over seeds and markdown tables (sweep summaries and reports)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), ignoring NaN."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std


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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["fmt_mean_std", "markdown_table", "mean_std"]
