"""`python run.py` as a user types it: multiruns and start-up errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each test starts `python run.py` in a fresh process (imports alone take seconds).
pytestmark = pytest.mark.slow
TINY = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.max_epochs=1",
    "data.batches_per_epoch=2",
    "data.n_points=100",
    "data.extrapolate_to=26",
]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_multirun_over_solver_and_sensitivity_runs_four_jobs(tmp_path: Path) -> None:
    result = run_cli(
        "-m",
        "solver=dopri5,rk4",
        "sensitivity=adjoint,direct",
        *TINY,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = sorted(tmp_path.glob("*/metrics.json"))
    assert len(metrics) == 4
    for path in metrics:
        values = json.loads(path.read_text())
        assert values["test/traj_mae"] >= 0
    overrides = {
        (tmp_path / p.parent.name / ".hydra" / "overrides.yaml").read_text() for p in metrics
    }
    assert len(overrides) == 4


def test_unknown_solver_lists_the_choices(tmp_path: Path) -> None:
    result = run_cli("solver=foo", *TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not find 'solver/foo'" in result.stderr
    assert "dopri5" in result.stderr and "rk4" in result.stderr


def test_bad_value_exits_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    result = run_cli("data.noise_std=-0.5", *TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    # The data module's own check (odelab.data.trajectories) names the key and the range.
    assert "data.noise_std" in output and "-0.5" in output and ">= 0" in output
    assert "Traceback" not in output


def test_runs_from_another_directory(tmp_path: Path) -> None:
    # Paths come from the checkout, not the working directory.
    result = run_cli(*TINY, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
