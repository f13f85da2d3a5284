"""Report statistics: intervals checked against closed forms, verdicts against their intervals."""

from __future__ import annotations

import math

import pytest

from odelab.reports.stats import binomial_interval, compare

# Student's t quantile t_{0.975} for 1 and 2 degrees of freedom (printed tables).
T975 = {1: 12.7062, 2: 4.3027}


def test_paired_interval_matches_the_closed_form():
    a, b = [2.0, 3.2, 4.1], [1.0, 2.0, 3.0]
    d = [1.0, 1.2, 1.1]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    c = compare(a, b, a_name="A", b_name="B", metric="loss", higher_is_better=False)
    assert c.mean_diff == pytest.approx(mean)
    assert c.low == pytest.approx(mean - T975[2] * sd / math.sqrt(3), rel=1e-4)
    assert c.high == pytest.approx(mean + T975[2] * sd / math.sqrt(3), rel=1e-4)
    assert c.n == 3
    # The interval excludes zero and A's loss is higher: A is worse.
    assert c.outcome == "worse" and c.paired


def test_interval_holding_zero_is_within_noise():
    c = compare([1.0, 2.0], [1.5, 1.4], a_name="A", b_name="B", metric="acc", higher_is_better=True)
    assert c.low < 0 < c.high
    half = T975[1] * math.sqrt((0.6 - 0.05) ** 2 + (-0.5 - 0.05) ** 2) / math.sqrt(2)
    assert c.high - c.mean_diff == pytest.approx(half, rel=1e-4)
    assert c.outcome == "within noise"


def test_unpaired_uses_welch_and_single_runs_have_no_interval():
    c = compare(
        [3.0, 3.2, 3.1, 3.3],
        [1.0, 1.1],
        a_name="A",
        b_name="B",
        metric="acc",
        higher_is_better=True,
        paired=False,
    )
    assert c.outcome == "better" and c.n == 2 and not c.paired
    one = compare([1.0], [2.0], a_name="A", b_name="B", metric="acc", higher_is_better=True)
    assert one.outcome == "n/a" and one.n == 1 and one.mean_diff == -1.0
    assert math.isnan(one.low) and math.isnan(one.high)
    # Missing values drop their pair; no spread gives the point as the interval.
    flat = compare(
        [1.0, None, 3.0], [0.5, 1.0, 2.5], a_name="A", b_name="B", metric="m", higher_is_better=True
    )
    assert (flat.n, flat.low, flat.high, flat.outcome) == (2, 0.5, 0.5, "better")
    with pytest.raises(ValueError, match="equal lengths"):
        compare([1.0, 2.0], [1.0], a_name="A", b_name="B", metric="m", higher_is_better=True)


def test_paired_accuracy_over_examples():
    a = [True] * 90 + [False] * 10
    b = [True] * 70 + [False] * 30
    c = compare(a, b, a_name="A", b_name="B", metric="accuracy", higher_is_better=True)
    assert c.mean_diff == pytest.approx(0.2)
    assert c.outcome == "better"


def test_plateau_states_from_the_validation_curve():
    from odelab.reports.mnist_table import plateau_state
    from odelab.reports.stats import resolvable

    # Exact sign test at its most favourable: p = 2 * 0.5**d, below 0.05 from d = 6 on.
    assert [resolvable(d) for d in range(8)] == [False] * 6 + [True] * 2
    epochs = list(range(8))
    assert plateau_state(epochs[:3], [0.5, 0.2, 0.1])[0] == "unknown"
    # The last quarter (2 epochs) no better than before: a plateau.
    assert plateau_state(epochs, [0.5, 0.2, 0.05, 0.02, 0.02, 0.02, 0.021, 0.02])[0] == "plateau"
    # Worse in the last quarter than before: a plateau, said as no gain.
    worse = plateau_state(epochs, [0.5, 0.2, 0.05, 0.02, 0.02, 0.02, 0.025, 0.025])
    assert worse == (
        "plateau",
        "plateau (no gain: the last quarter's best error 25.0 % above the best before)",
    )
    # 0.020 -> 0.017 is 15 % relative: improving without a size, within noise on 1000
    # images (3 fewer errors), improving on 10,000 (30 fewer errors).
    curve = [0.5, 0.2, 0.05, 0.02, 0.02, 0.02, 0.018, 0.017]
    assert plateau_state(epochs, curve)[0] == "improving"
    assert plateau_state(epochs, curve, 1000)[0] == "unresolved"
    assert "by 3 errors of 1000" in plateau_state(epochs, curve, 1000)[1]
    assert plateau_state(epochs, curve, 10_000)[0] == "improving"


def _tail(k_from: int, k_to: int, n: int, p: float) -> float:
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(k_from, k_to + 1))


def test_exact_binomial_interval_solves_its_tail_equations():
    # Ends of the exact interval: P(X >= k | low) = 2.5 % = P(X <= k | high).
    low, high = binomial_interval(13, 20)
    assert _tail(13, 20, 20, low / 100) == pytest.approx(0.025, abs=1e-6)
    assert _tail(0, 13, 20, high / 100) == pytest.approx(0.025, abs=1e-6)
    # Closed forms at the edges: no success, or all.
    assert binomial_interval(0, 50) == pytest.approx((0.0, 100 * (1 - 0.025 ** (1 / 50))))
    assert binomial_interval(50, 50) == pytest.approx((100 * 0.025 ** (1 / 50), 100.0))
