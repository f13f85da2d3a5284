"""Kill a run (SIGKILL or SIGTERM) at a random step, resume it, and get the uninterrupted run.

Every task trains five short epochs on the CPU through `run.py` with the CSV
logger: once without interruption, once killed at a random point of its third
epoch and resumed with `resume=true` in the same folder (which
resumes from `checkpoints/last.ckpt`). The resumed run must end with the same
metrics and the same CSV log (every logged step once, same values), and SIGTERM
must leave a checkpoint and exit with 143. A multirun killed mid-sweep reruns
only its unfinished jobs.
"""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUIET = [
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]

# The offline MNIST split cut to a dozen batches, for the image tasks.
SMALL_IMAGES = [
    "data.train_subset=384",
    "data.batch_size=32",
    "data.val_size=64",
    "data.test_size=64",
    "data.eval_batch_size=64",
    "model.net.channels=8",
]

TASKS = {
    "spiral": [
        "experiment=spiral",
        "data.batches_per_epoch=30",
        "data.n_points=200",
        "data.extrapolate_to=27",
        "trainer.max_epochs=5",
        "model.scheduler.T_max=150",
    ],
    # Shuffling and random crops draw from the global random stream.
    "mnist": [
        "experiment=mnist_odenet",
        *SMALL_IMAGES,
        "model.scheduler.milestones=[1,2]",
        "trainer.max_epochs=5",
    ],
    # Hutchinson's probe vectors come from the global random stream.
    "cnf": [
        "experiment=cnf_toy",
        "trace=hutchinson",
        "data.batch_size=64",
        "data.batches_per_epoch=15",
        "data.n_val=128",
        "data.n_test=128",
        "data.eval_batch_size=128",
        "model.flow.field.hidden=16",
        "model.grid_size=10",
        "model.n_plot_samples=64",
        "model.n_frames=2",
        "trainer.max_epochs=5",
    ],
    # Noise augmentation without a seed draws from the global random stream.
    "robust": [
        "experiment=robust_odenet",
        "recipe=gaussian",
        *SMALL_IMAGES,
        "attack=fgsm",
        "attack.strengths=[0.1]",
        "trainer.max_epochs=5",
    ],
    # PGD's random starts come from the attack's own generator, which checkpoints carry.
    "robust_pgd": [
        "experiment=robust_cnn",
        "recipe=pgd",
        "recipe.perturbation.steps=2",
        "recipe.warmup_epochs=1",
        *SMALL_IMAGES,
        "attack=fgsm",
        "attack.strengths=[0.1]",
        "trainer.max_epochs=5",
    ],
}


def command(*args: str) -> list[str]:
    flags = [a for a in args if a.startswith("-")]  # -m before the overrides
    return [
        sys.executable,
        str(ROOT / "run.py"),
        *flags,
        *QUIET,
        *(a for a in args if a not in flags),
    ]


def run_to_end(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command(*args), cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_in_third_epoch(
    args: list[str],
    ckpt_dir: Path,
    sig: int,
    rng: random.Random,
) -> subprocess.CompletedProcess:
    """Start a run and kill it at a random point of its third epoch (of five).

    The second epoch's length, timed between the first two epoch checkpoints, scales
    the wait, so the signal lands after a checkpoint and well before the run ends on
    a fast machine and on a loaded one alike.
    """
    proc = subprocess.Popen(
        command(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600

    def wait_for(path: Path) -> float:
        while not path.is_file():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return time.monotonic()

    first = wait_for(ckpt_dir / "epoch_000.ckpt")
    second = wait_for(ckpt_dir / "epoch_001.ckpt")
    time.sleep(rng.uniform(0.05, 0.5) * (second - first))
    assert proc.poll() is None, "the run ended before it could be killed; give it more epochs"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def final_metrics(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if "time" not in k}


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    """The CSV log without wall-clock columns, in logged order."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if "time" not in k and v != ""} for row in rows]


def assert_same_run(resumed: Path, straight: Path) -> None:
    assert final_metrics(resumed) == final_metrics(straight)
    got, want = csv_rows(resumed), csv_rows(straight)
    assert [r["step"] for r in got] == [r["step"] for r in want], "logged steps differ"
    assert got == want


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs, made once per task on first use."""
    base = tmp_path_factory.mktemp("straight")

    class Lazy(dict):
        def __missing__(self, task: str) -> Path:
            run_dir = base / task
            run_to_end(*TASKS[task], f"hydra.run.dir={run_dir}")
            self[task] = run_dir
            return run_dir

    return Lazy()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("task", list(TASKS))
def test_killed_run_resumes_to_the_uninterrupted_result(
    task: str, sig: int, straight_runs: dict[str, Path], tmp_path: Path
) -> None:
    rng = random.Random(f"{task}-{sig}")
    run_dir = tmp_path / "run"
    args = [*TASKS[task], f"hydra.run.dir={run_dir}"]
    killed = kill_in_third_epoch(args, run_dir / "checkpoints", sig, rng)
    assert killed.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL), killed.stderr[
        -3000:
    ]
    if sig == signal.SIGTERM:
        # Lightning finished the batch in progress and the interrupt checkpoint holds it.
        assert (run_dir / "checkpoints" / "on_exception.ckpt").is_file()
        output = killed.stdout + killed.stderr
        assert "stopped by SIGTERM" in output
        assert "Traceback" not in output
    assert not (run_dir / "metrics.json").exists()
    run_to_end(*args, "resume=true")
    assert_same_run(run_dir, straight_runs[task])


@pytest.mark.slow
def test_interrupted_multirun_reruns_only_unfinished_jobs(tmp_path: Path) -> None:
    sweep = [*TASKS["spiral"], "seed=0,1"]
    straight = tmp_path / "straight"
    run_to_end("-m", *sweep, f"hydra.sweep.dir={straight}")
    sweep_dir = tmp_path / "killed"
    args = ["-m", *sweep, f"hydra.sweep.dir={sweep_dir}"]
    # Killed inside the second job, in its third epoch.
    killed = kill_in_third_epoch(
        args, sweep_dir / "1" / "checkpoints", signal.SIGKILL, random.Random(1)
    )
    assert killed.returncode == -signal.SIGKILL
    first_job = (sweep_dir / "0" / "metrics.json").stat().st_mtime_ns
    assert not (sweep_dir / "1" / "metrics.json").exists()
    resumed = run_to_end(*args, "resume=true")
    assert (sweep_dir / "0" / "metrics.json").stat().st_mtime_ns == first_job  # not rerun
    assert "already finished (resume=true)" in resumed.stdout + resumed.stderr
    for job in ("0", "1"):
        assert_same_run(sweep_dir / job, straight / job)
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["completed", "completed"]
