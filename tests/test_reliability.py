"""Diverging solves, safe and checked checkpoints, and start-up checks of single keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from odelab.checkpoints import RECORD_KEY, load_checkpoint
from odelab.errors import ConfigError, SolverError
from odelab.ode import ODEBlock, Solver
from odelab.train import run

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "experiment=spiral",
    "data.batches_per_epoch=3",
    "data.n_points=100",
    "data.extrapolate_to=26",
]


class Cubic(nn.Module):
    """dz/dt = z^3: from z0 = 2 the exact solution blows up at t = 1/8."""

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z**3


@pytest.mark.parametrize(
    "solver",
    [
        Solver("dopri5", rtol=1e3, atol=1e3),
        Solver("dopri5", rtol=1e-6, atol=1e-6, max_num_steps=40),
        Solver("rk4", step_size=0.5),
        Solver("bosh3", rtol=1e-8, atol=1e-8, max_nfe=30),
    ],
    ids=["too-loose", "max_num_steps", "fixed-grid-nan", "max_nfe"],
)
def test_diverging_solve_names_solver_tolerances_time_and_nfe(solver: Solver) -> None:
    block = ODEBlock(Cubic(), solver, t=(0.0, 5.0))
    with pytest.raises(SolverError) as info:
        block(torch.full((4, 2), 2.0))
    message = str(info.value)
    assert "\n" not in message
    assert solver.method in message
    assert ("rtol=" in message) == solver.adaptive and ("step_size=" in message) != solver.adaptive
    assert "t=" in message and "NFE" in message
    # The time reached lies inside the span, and past the start for every solver here.
    reached = float(message.split("t=", 1)[1].split()[0].rstrip(")"))
    assert 0 < reached <= 5


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.map = nn.Linear(3, 3)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.map(z)


class SyncCounter:
    """Counts tensor-to-Python conversions: each one waits for the device."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        for name in ("__bool__", "item", "__float__", "__int__", "tolist"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.calls += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def test_finite_check_costs_no_host_sync_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    field = Linear()
    y0 = torch.randn(5, 3)
    counter = SyncCounter(monkeypatch)
    overhead, raws = [], []
    for steps in (10, 100):
        solver = Solver("rk4", step_size=1.0 / steps)
        block = ODEBlock(field, solver, t=(0.0, 1.0))
        block(y0)  # the first solve also checks the field's shape, once
        counter.calls = 0
        odeint(field, y0, block.t, **solver.odeint_kwargs())
        raw = counter.calls
        raws.append(raw)
        counter.calls = 0
        block(y0)
        overhead.append(counter.calls - raw)
        assert block.nfe_forward == 2 * 4 * steps  # two solves of `steps` rk4 steps
    # The block adds the same few conversions whatever the number of steps: the
    # NaN/inf check happens once per solve.
    assert overhead[0] == overhead[1] <= 2, overhead
    assert raws[1] > raws[0], raws  # the counter sees torchdiffeq's own per-step checks


def test_foreign_and_older_checkpoints_name_both_sides(make_cfg, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save(
        {
            "state_dict": {},
            RECORD_KEY: {
                "format": 1,
                "task_name": "cnf_toy",
                "model": "odelab.tasks.density.DensityEstimation",
            },
        },
        foreign,
    )
    expected = r"written by experiment 'cnf_toy'.*this run is experiment 'spiral'"
    with pytest.raises(ConfigError, match=expected):
        run(make_cfg(*TINY, f"ckpt_path={foreign}"))
    older = tmp_path / "older.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(2, 2)}}, older)
    with pytest.raises(
        ConfigError,
        match=r"older layout.*does not fit the model of experiment "
        r"'spiral'.*missing: .*unexpected: net.weight",
    ):
        run(make_cfg(*TINY, f"ckpt_path={older}"))


def test_checkpoints_load_with_weights_only(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*TINY, "trainer.max_epochs=2", subdir="run"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(ckpt)  # torch.load(weights_only=True)
    record = checkpoint[RECORD_KEY]
    assert record["task_name"] == "spiral" and record["model"].endswith("DynamicsRecovery")
    # Resuming and evaluating load the same way.
    metrics = run(make_cfg(*TINY, "train=false", f"ckpt_path={ckpt}", subdir="eval"))
    assert metrics["test/traj_mae"] >= 0


def test_a_fresh_run_ignores_an_old_interrupt_checkpoint(make_cfg, tmp_path: Path) -> None:
    """With Lightning's OnExceptionCheckpoint among the callbacks, fit(ckpt_path=None)
    resumes from the newest checkpoint, here an interrupted run's on_exception.ckpt; a run
    with nothing to resume must start afresh (and so match a run in an empty folder), and
    the stale state goes once training finishes."""
    run(make_cfg(*TINY, "trainer.max_epochs=1", subdir="old"))
    stale = tmp_path / "again" / "checkpoints" / "on_exception.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes((tmp_path / "old" / "checkpoints" / "last.ckpt").read_bytes())
    two = ("trainer.max_epochs=2", "seed=3")
    straight = run(make_cfg(*TINY, *two, subdir="straight"))
    again = run(make_cfg(*TINY, *two, "resume=true", subdir="again"))
    assert {k: v for k, v in again.items() if "time" not in k} == {
        k: v for k, v in straight.items() if "time" not in k
    }
    assert not stale.exists()


def test_a_fresh_run_refuses_a_folder_with_an_earlier_run(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*TINY, "trainer.max_epochs=1", subdir="run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(ConfigError, match=r"^resume=false, .*last.ckpt; pass resume=true"):
        run(make_cfg(*TINY, "trainer.max_epochs=2", subdir="run"))
    assert last.read_bytes() == before


def test_resume_refuses_other_settings_and_trains_a_finished_run_on(
    make_cfg, tmp_path: Path
) -> None:
    """resume=true continues a run only with the settings it was made with: another
    learning rate is refused (the finished run's metrics kept), a larger max_epochs trains
    the finished run on from its last checkpoint, to the run that trained that long."""
    fixed = ("model.scheduler.T_max=20", "seed=5")
    run(make_cfg(*TINY, *fixed, "trainer.max_epochs=1", subdir="run"))
    metrics = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(
        ConfigError, match=r"^resume=true, but the run in .* other settings \(model.optimizer.lr: "
    ):
        run(make_cfg(*TINY, *fixed, "trainer.max_epochs=1", "model.optimizer.lr=0.5",
                     "resume=true", subdir="run"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"trainer.max_epochs: 1 -> 0 \(a run cannot train fewer"):
        run(make_cfg(*TINY, *fixed, "trainer.max_epochs=0", "resume=true", subdir="run"))
    assert (tmp_path / "run" / "metrics.json").read_bytes() == metrics
    # A mapping that became null (or the reverse) counts, though no key is on both sides.
    with pytest.raises(ConfigError, match=r"other settings \(model.scheduler: \.\.\. -> None\)"):
        run(make_cfg(*TINY, *fixed, "trainer.max_epochs=1", "model.scheduler=null",
                     "resume=true", subdir="run"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"model.scheduler.T_max: 20 -> 6\).*follows it by"):
        run(make_cfg(*TINY, "seed=5", "trainer.max_epochs=2", "resume=true", subdir="run"))
    longer = run(make_cfg(*TINY, *fixed, "trainer.max_epochs=2", "resume=true", subdir="run"))
    assert json.loads((tmp_path / "run" / "metrics.1_epochs.json").read_bytes()) == json.loads(
        metrics
    )
    straight = run(make_cfg(*TINY, *fixed, "trainer.max_epochs=2", subdir="straight"))
    assert {k: v for k, v in longer.items() if "time" not in k} == {
        k: v for k, v in straight.items() if "time" not in k
    }


def test_a_multirun_refuses_a_used_sweep_folder_before_any_job(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from odelab.errors import FolderInUse
    from odelab.sweeps import refuse_used_sweep_dir

    def config(**top: object) -> object:
        return OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, **top})

    refuse_used_sweep_dir(config())  # empty folder
    (tmp_path / "3" / "checkpoints").mkdir(parents=True)
    (tmp_path / "3" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(
        FolderInUse, match=r"hydra.sweep.dir=.*\(3/checkpoints/last.ckpt\); pass resume=true"
    ):
        refuse_used_sweep_dir(config())
    refuse_used_sweep_dir(config(resume=True))
    refuse_used_sweep_dir(config(train=False))


@pytest.mark.slow
def test_diverging_job_keeps_last_good_checkpoint(make_cfg, tmp_path: Path) -> None:
    # T_max fixed: by default it follows max_epochs, and resume=true refuses a new schedule.
    run(make_cfg(*TINY, "trainer.max_epochs=2", "model.scheduler.T_max=9", subdir="run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    (tmp_path / "run" / "metrics.json").unlink()  # unfinished: resume=true trains on
    with pytest.raises(SolverError, match=r"max_nfe=5.*NFE.*last good checkpoint is .*last.ckpt"):
        run(
            make_cfg(
                *TINY,
                "trainer.max_epochs=3",
                "model.scheduler.T_max=9",
                "resume=true",
                "solver.max_nfe=5",
                subdir="run",
            )
        )
    assert last.read_bytes() == before


@pytest.mark.slow
def test_diverging_job_fails_alone_in_a_sweep(tmp_path: Path) -> None:
    # lr=1e6 blows the field up after the first step; max_num_steps keeps the runaway solve short.
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            *TINY,
            "trainer.max_epochs=1",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "solver.max_num_steps=200",
            "model.optimizer.lr=0.01,1e6,0.02",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads((tmp_path / "summary.json").read_text())
    assert [r["status"] for r in records] == ["completed", "failed", "completed"]
    error = records[1]["error"]
    assert error.startswith("SolverError") and "dopri5 (rtol=0.0001, atol=0.0001)" in error
    assert "reached t=" in error and "NFE" in error
    summary = (tmp_path / "summary.md").read_text()
    assert "| 1 | failed |" in summary and "3 jobs, 2 completed, 1 failed." in summary
