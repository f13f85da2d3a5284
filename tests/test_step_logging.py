"""Per-step metrics reach the loggers exactly as before, at a fraction of the cost.

NFEMonitor and StepTimer log on the batches the loggers record and keep their
epoch means themselves; these tests pin the values against exact NFE counts
of a fixed-grid solver and the steps Lightning writes.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from odelab.train import run

ROOT = Path(__file__).resolve().parents[1]

# rk4 on the output grid: (batch_time - 1) intervals x 4 stages per training solve.
BATCH_TIME = 5
NFE_PER_STEP = (BATCH_TIME - 1) * 4


def _tiny_spiral(make_cfg, *overrides: str):
    return make_cfg(
        "experiment=spiral",
        "solver=rk4",
        "solver.step_size=null",
        f"data.batch_time={BATCH_TIME}",
        "data.batch_size=4",
        "data.batches_per_epoch=5",
        "data.n_points=50",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=2",
        "~callbacks.save_figures",
        "~callbacks.model_checkpoint",
        *overrides,
    )


def _written_steps(metrics_csv: Path, key: str) -> list[int]:
    rows = list(csv.DictReader(metrics_csv.open()))
    return sorted(int(r["step"]) for r in rows if r.get(key))


def test_step_metrics_are_exact_and_written_on_logging_steps(make_cfg, tmp_path: Path) -> None:
    metrics = run(_tiny_spiral(make_cfg, "logger=csv"))
    assert metrics["train/nfe_forward_epoch"] == NFE_PER_STEP
    assert metrics["train/nfe_forward"] == NFE_PER_STEP
    assert metrics["train/nfe_backward_epoch"] == 0  # direct: autograd replays, no new evaluations
    assert metrics["train/step_time_epoch"] > 0
    # Evaluation solves from y0 over 50 observed + 10 extrapolated points: 59 intervals.
    assert metrics["val/nfe_forward"] == metrics["test/nfe_forward"] == 59 * 4

    metrics_csv = tmp_path / "run" / "csv" / "metrics.csv"
    # 10 steps, log_every_n_steps=2: Lightning writes after steps 2, 4, ... (0-based 1, 3, ...).
    for key in ("train/loss", "train/nfe_forward", "train/nfe_backward", "train/step_time"):
        assert _written_steps(metrics_csv, key) == [1, 3, 5, 7, 9], key
    assert len(_written_steps(metrics_csv, "train/nfe_forward_epoch")) == 2  # one per epoch


def test_adjoint_backward_nfe_epoch_mean_is_exact(make_cfg) -> None:
    metrics = run(_tiny_spiral(make_cfg, "sensitivity=adjoint", "trainer.max_epochs=1"))
    # rk4 adjoint: the same grid walked backwards, 4 stages per interval.
    assert metrics["train/nfe_backward_epoch"] == NFE_PER_STEP
    assert metrics["train/nfe_backward"] == NFE_PER_STEP


def test_benchmark_max_time_string() -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_spiral", ROOT / "experiments" / "bench_spiral.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.max_time(99.6) == "00:00:01:40"
    assert bench.max_time(90061) == "01:01:01:01"
