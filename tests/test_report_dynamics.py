"""The dynamics report (issue 42) on fabricated runs whose outcome is known: a clear recovery, a
clear failure, divergences counted in the rates rather than dropped, claims a budget cannot test,
and the fitted noise slope against the closed form of err = c * noise^k."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from odelab.reports import dynamics
from odelab.reports.base import load_sweeps
from odelab.reports.claims import read_claims

NOISES = (0.01, 0.05, 0.1)


class _Budget:
    """Writes sweep job folders (overrides, metrics, job record) as a run of the study would."""

    def __init__(self, root: Path):
        self.root, self.count = root, {}

    def job(self, sweep: int, overrides: list[str], metrics: dict[str, float] | None) -> Path:
        num = self.count.get(sweep, 0)
        self.count[sweep] = num + 1
        job = self.root / str(sweep) / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (job / "job.json").write_text(json.dumps({"seconds": 10.0}))
        if metrics is not None:  # a crashed job leaves no metrics.json
            (job / "metrics.json").write_text(json.dumps(metrics))
        return job


def _ok(rel: float) -> dict[str, float]:
    return {
        "test/traj_mae": 2 * rel,
        "test/traj_rel": rel,
        "test/extrap_rel": 3 * rel,
        "test/train_wall_s": 5.0,
        "test/peak_rss_mb": 300.0,
        "test/nfe_forward_per_step": 20.0,
        "test/nfe_backward_per_step": 30.0,
        "test/diverged": 0.0,
    }


DIVERGED = {"test/diverged": 1.0, "test/traj_rel": math.nan}


def _table(system: str, noise: float, seed: int, keep: float = 1.0) -> list[str]:
    return [
        f"experiment=dynamics_{system}",
        f"data.noise_frac={noise}",
        f"data.keep_frac={keep}",
        f"seed={seed}",
    ]


def _stiff(route: list[str], seed: int) -> list[str]:
    return ["experiment=dynamics_robertson", *route, f"seed={seed}"]


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(dynamics, "TAGS", {"cpu": ["table", "stiff"], "quick": ["table", "stiff"]})
    budget = _Budget(tmp_path / "runs")
    for seed, (good, bad) in enumerate([(0.02, 0.5), (0.03, 0.6), (0.025, 0.55)]):
        budget.job(0, _table("spiral", 0.05, seed), _ok(good))  # clear recovery
        budget.job(0, _table("damped_linear", 0.05, seed), _ok(bad))  # clear failure
        budget.job(0, _table("lotka_volterra", 0.05, seed), DIVERGED if seed == 1 else _ok(good))
    explicit, scaled = ["solver=dopri5"], ["solver=dopri5", "data.scale=true"]
    job = budget.job(1, _stiff(explicit, 0), DIVERGED)
    (job / "failure.txt").write_text("step size underflow at t = 3e-05\n")
    budget.job(1, _stiff(explicit, 1), DIVERGED)
    budget.job(1, _stiff(explicit, 2), None)  # crashed: a failure too
    for seed in range(3):
        budget.job(1, _stiff(["solver=scipy_radau"], seed), _ok(0.05))
        budget.job(1, _stiff(scaled, seed), DIVERGED if seed == 1 else _ok(0.08))
    return tmp_path


def _verdicts(root: Path, budget: str) -> dict:
    dynamics.build_report(load_sweeps(root / "runs"), budget, root / "out")
    return {v.claim: v for v in read_claims(root / "out" / "claims.json")}


def test_recovery_verdicts_on_runs_of_known_outcome(study: Path) -> None:
    verdicts = _verdicts(study, "cpu")
    spiral = verdicts["recover_spiral_5pct"]
    assert spiral.verdict == "reproduced" and spiral.n == 3
    assert spiral.mean == pytest.approx(np.mean([0.02, 0.03, 0.025]), rel=1e-5)
    assert verdicts["recover_damped_linear_5pct"].verdict == "contradicted"
    # One of three diverged: the two finished runs are below the bar, yet no recovery is claimed.
    lotka = verdicts["recover_lotka_volterra_5pct"]
    assert lotka.verdict == "within noise" and "1 of 3 runs diverged" in lotka.reason
    assert verdicts["recover_van_der_pol_5pct"].verdict == "not testable here"


def test_divergences_count_in_the_tables_and_success_rates(study: Path) -> None:
    frame = dynamics.study_frame(load_sweeps(study / "runs"), ["table", "stiff"])
    table = dynamics.recovery_table(frame).set_index("case")
    assert table.loc["lotka_volterra", ["runs", "failed", "n"]].tolist() == [3, 1, 2]
    stiff = dynamics.stiff_table(frame).set_index("route")
    assert stiff.loc["explicit", ["ok", "runs"]].tolist() == [0, 3]  # the crashed job counts
    assert stiff.loc["scaled", ["ok", "runs"]].tolist() == [2, 3]
    assert stiff.loc["implicit", "rate"] == 1.0
    assert stiff.loc["scaled", "solver_label"] == "dopri5 + scaling"
    assert stiff.loc["explicit", "why"] == "step size underflow at t = 3e-05"
    # Clopper-Pearson for 0 of 3: [0, 1 - 0.025 ** (1/3)].
    assert stiff.loc["explicit", "high"] == pytest.approx(1 - 0.025 ** (1 / 3), rel=1e-6)
    verdicts = _verdicts(study, "cpu")
    assert verdicts["stiff_robertson_explicit_fails"].verdict == "reproduced"
    assert verdicts["stiff_robertson_explicit_fails"].n == 3
    assert verdicts["stiff_robertson_implicit_trains"].verdict == "reproduced"
    assert verdicts["stiff_robertson_scaled_trains"].verdict == "within noise"
    vdp = verdicts["stiff_vdp1000_explicit_fails"]
    assert vdp.verdict == "not testable here" and "no explicit runs" in vdp.reason


def test_a_budget_that_cannot_test_a_claim_says_so(study: Path) -> None:
    verdicts = _verdicts(study, "quick")
    for claim in ("recover_spiral_5pct", "noise_slope", "stiff_vdp1000_recovered"):
        assert verdicts[claim].verdict == "not testable here", claim
        assert verdicts[claim].n == 0 and verdicts[claim].reason
    # The stiff claims are testable at quick: the runs are there.
    assert verdicts["stiff_robertson_explicit_fails"].verdict == "reproduced"


def test_report_shape_on_fabricated_runs(study: Path) -> None:
    text = dynamics.build_report(load_sweeps(study / "runs"), "cpu", study / "out")
    lines = text.splitlines()
    summary = lines[: next(i for i, line in enumerate(lines) if line.startswith("## "))]
    assert len(lines) <= 300 and len(summary) <= 25
    assert "| Claim | Paper |" in "\n".join(summary)
    assert (study / "out" / "noise.png").is_file()


def test_noise_slope_is_the_closed_form_exponent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dynamics, "TAGS", {"cpu": ["table"]})
    budget = _Budget(tmp_path / "runs")
    exponents = {"spiral": 0.7, "lotka_volterra": 1.3}
    for system, k in exponents.items():
        for seed, c in enumerate((0.5, 0.8, 1.1)):
            for noise in NOISES:
                budget.job(0, _table(system, noise, seed), _ok(c * noise**k))
            # Neither the noise-free nor the sparse runs enter the fit.
            budget.job(0, _table(system, 0.0, seed), _ok(0.9))
            budget.job(0, _table(system, 0.05, seed, keep=0.2), _ok(0.9))
    frame = dynamics.study_frame(load_sweeps(tmp_path / "runs"), ["table"])
    slopes = dynamics.noise_slopes(frame)
    assert len(slopes) == 6
    for system, k in exponents.items():
        rows = slopes[slopes["case"] == system].sort_values("seed")
        assert rows["slope"].to_numpy() == pytest.approx([k] * 3, abs=1e-9)
        assert np.exp(rows["intercept"]).to_numpy() == pytest.approx([0.5, 0.8, 1.1], rel=1e-9)
    by_case = dynamics.slope_table(slopes).set_index("case")
    assert by_case.loc["spiral", "k"] == pytest.approx(0.7, abs=1e-9)
    verdict = _verdicts(tmp_path, "cpu")["noise_slope"]
    assert verdict.mean == pytest.approx(1.0, abs=1e-6) and verdict.n == 6
