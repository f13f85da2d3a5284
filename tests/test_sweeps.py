"""Sweeps, launchers and DDP, run the way users run them: `python run.py -m ...`.

Each subprocess run is a fast_dev_run (one batch), so the whole file stays
within a couple of minutes on two CPU cores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from odelab.hydra_setup import CONFIG_DIR, repo_root
from odelab.sweeps import JobRecord, load_records

QUIET = [
    "logger=none",
    "trainer.fast_dev_run=true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def run_py(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python run.py <args>` from the repository root, with this checkout's sources."""
    env = dict(os.environ, PYTHONPATH=str(repo_root() / "src"), WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, str(repo_root() / "run.py"), *args],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,  # the assertion below shows the output
    )
    assert proc.returncode == 0, f"run.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def job_metric(job_dir: Path, key: str) -> float:
    return json.loads((job_dir / "metrics.json").read_text())[key]


@pytest.mark.slow
def test_optuna_sweep_two_trials(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "optuna"
    proc = run_py(
        "-m",
        "hparams_search=spiral_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        *QUIET,
        f"hydra.sweep.dir={sweep_dir}",
    )
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"model.optimizer.lr", "model.field.hidden", "solver.rtol"}
    # The objective Optuna saw is the metric each job wrote, and it kept the lower one.
    values = [job_metric(sweep_dir / str(n), "val/traj_mae") for n in (0, 1)]
    assert result["best_value"] == pytest.approx(min(values))
    # atol follows the sampled rtol.
    job_cfg = yaml.safe_load((sweep_dir / "0" / ".hydra" / "config.yaml").read_text())
    sampled = yaml.safe_load((sweep_dir / "0" / ".hydra" / "overrides.yaml").read_text())
    rtol = float(next(o.split("=")[1] for o in sampled if o.startswith("solver.rtol=")))
    assert job_cfg["solver"]["atol"] == "${solver.rtol}" and job_cfg["solver"][
        "rtol"
    ] == pytest.approx(rtol)
    assert "Best parameters" in proc.stdout + proc.stderr
    assert [r.status for r in load_records(sweep_dir)] == ["completed", "completed"]


@pytest.mark.slow
def test_joblib_multirun_with_a_failing_job(tmp_path: Path) -> None:
    """Two jobs in parallel workers; one diverges (NFE guard), the other finishes."""
    sweep_dir = tmp_path / "joblib"
    proc = run_py(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "solver.max_nfe=3,100000",
        *QUIET,
        f"hydra.sweep.dir={sweep_dir}",
    )
    failed, completed = load_records(sweep_dir)
    assert (
        failed.status == "failed"
        and "SolverError" in failed.error
        and "solver.max_nfe" in failed.error
    )
    assert "solver.max_nfe=3" in failed.overrides and failed.metric is None
    assert completed.status == "completed"
    assert completed.metric == pytest.approx(job_metric(sweep_dir / "1", "val/traj_mae"))
    # joblib handed the two jobs to two worker processes at once.
    assert failed.pid != completed.pid
    summary = (sweep_dir / "summary.md").read_text()
    assert "2 jobs, 1 completed, 1 failed." in summary and summary in proc.stdout
    assert f"Best (minimize val/traj_mae): job 1, {completed.metric:.6g}" in summary


@pytest.mark.slow
def test_ddp_cpu_two_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    proc = run_py("experiment=spiral", "trainer=ddp_cpu", *QUIET, f"hydra.run.dir={run_dir}")
    # Lightning re-launched run.py for rank 1 into the same folder; only rank 0 reports.
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert proc.stdout.count("odelab run: spiral") == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["val/traj_mae"]) and metrics["train/nfe_forward"] > 0
    record = JobRecord.load(run_dir / "job.json")
    assert record.status == "completed" and record.pid != os.getpid()


def test_slurm_launcher_composes(make_cfg) -> None:
    cfg = make_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    # srun starts one process per device and node, as Lightning's DDP expects under SLURM.
    assert launcher.tasks_per_node == cfg.trainer.devices == launcher.gpus_per_node
    assert launcher.nodes == 2
    plain = make_cfg("hydra/launcher=submitit_slurm", subdir="plain")
    assert plain.hydra.launcher._target_.endswith("SlurmLauncher")


def test_mnist_optuna_search_composes(make_cfg) -> None:
    if not (CONFIG_DIR / "experiment" / "mnist_odenet.yaml").is_file():
        pytest.skip(reason="conf/experiment/mnist_odenet.yaml is not in this checkout")
    cfg = make_cfg("hparams_search=mnist_odenet_optuna")
    assert cfg.optimized_metric == "val/error"
    assert set(cfg.hydra.sweeper.params) == {"model.optimizer.lr", "solver.rtol"}
