"""Recover an unknown vector field from noisy observations of its trajectories.

Two kinds of data feed it: one trajectory (`odelab.data.trajectories.Trajectory`, the
spiral demo) or several from different initial conditions
(`odelab.data.dynamics.TrajectorySet`, the dynamics study of issue 42), scored on
held-out initial conditions. A run whose training diverges (NaN loss, a solve that runs
away, the wall-time budget spent) stops cleanly: `test/diverged = 1`, the reason in
`failure.txt` beside `metrics.json`, so a sweep counts it rather than crashing.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from odelab.callbacks import writes_logs_now
from odelab.data.dynamics import TrajectorySet
from odelab.data.trajectories import Trajectory
from odelab.errors import ConfigError, SolverError
from odelab.ode import ODEBlock, Sensitivity, Solver
from odelab.plotting import dynamics_figures
from odelab.tasks.base import OdelabTask

log = logging.getLogger(__name__)

LOSSES = {"l1": nn.functional.l1_loss, "mse": nn.functional.mse_loss}


def check_scipy_route(solver: Solver, sensitivity: Sensitivity) -> None:
    """What torchdiffeq's `scipy_solver` cannot do, refused in one line each.

    It integrates in numpy under `torch.no_grad()`: no autograd graph, so gradients need
    the adjoint, and no GPU tensors (every field call would copy to the host).
    """
    if solver.method != "scipy_solver":
        return
    if not sensitivity.adjoint:
        raise ConfigError(
            "solver=scipy_* (torchdiffeq scipy_solver) integrates in numpy without an autograd "
            "graph, so direct gradients are zero; add sensitivity=adjoint"
        )


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB) since the last `reset_peak_rss`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Restart the peak-RSS count (Linux >= 4.0), so that each job of a sweep run in one
    process measures its own peak; elsewhere the process-wide peak stays (an upper bound)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class DynamicsRecovery(OdelabTask):
    """Fits `dz/dt = field(z)` so that solves from window starts match the windows.

    Metrics (val/ and test/): `traj_mae` solving the whole observed span from the true
    initial state(s), `extrap_mae` beyond it, `field_rel_err` the relative RMS error of the
    learned field on a grid around the data. On a `TrajectorySet` also `traj_rel` and
    `extrap_rel` (MAE per component / the state's scale, averaged), and on test:
    `nfe_forward_per_step`, `nfe_backward_per_step` (means over training steps),
    `train_wall_s`, `peak_rss_mb`, `diverged`.

    Args:
        field: the vector field to learn.
        solver, sensitivity: how windows are integrated.
        loss: "l1" or "mse" between solved and observed windows.
        learn_initial_states: start each window from a learned state, one per
            observation time, initialised at the observation (multiple
            shooting). With noisy data a window started at a noisy observation
            carries that noise through its whole solve; learned starts are
            pulled onto a path the field can follow. "auto" learns them when
            the data are noisy (`data.noise_std > 0`) or sparse.
        max_wall_s: training wall-time budget in seconds (None: none); when spent, the run
            stops and counts as diverged. A single runaway solve is bounded by
            solver.max_nfe instead.
    """

    def __init__(
        self,
        field: nn.Module,
        solver: Solver,
        sensitivity: Sensitivity,
        loss: str = "l1",
        learn_initial_states: bool | str = "auto",
        max_wall_s: float | None = None,
        **optim: Any,
    ):
        super().__init__(**optim)
        if learn_initial_states not in (True, False, "auto"):
            raise ConfigError(
                f"model.learn_initial_states={learn_initial_states!r}; choose true, false or auto"
            )
        if loss not in LOSSES:
            raise ConfigError(f"model.loss={loss!r}; choose one of {sorted(LOSSES)}")
        if max_wall_s is not None and not max_wall_s > 0:
            raise ConfigError(f"model.max_wall_s must be > 0 seconds or null, got {max_wall_s}")
        check_scipy_route(solver, sensitivity)
        self.block = ODEBlock(
            field, solver, sensitivity, return_trajectory=True, name="model.field"
        )
        self.loss_fn = LOSSES[loss]
        self.learn_initial_states = learn_initial_states
        self.max_wall_s = max_wall_s
        self.initial_states: nn.Parameter | None = None
        self._last_eval: tuple[Any, Tensor] | None = None
        self.failure: str | None = None
        self._fit_start: float | None = None
        self.train_wall_s = 0.0
        self._nfe = [0, 0, 0]  # forward, backward, steps

    def setup(self, stage: str) -> None:
        if self.block.solver.method == "scipy_solver":
            if self.trainer.strategy.root_device.type != "cpu":
                raise ConfigError(
                    "solver=scipy_* integrates on the CPU in numpy; use trainer=cpu "
                    "(trainer.accelerator=cpu)"
                )
        # Sized by the data, which Lightning sets up before the module; created
        # before the optimizer and before a checkpoint is restored.
        if self.initial_states is not None:
            return
        data = self.trainer.datamodule
        learn = self.learn_initial_states
        if learn == "auto":
            learn = getattr(data, "needs_learned_starts", data.noise_std > 0)
        if learn:
            self.initial_states = nn.Parameter(data.trajectory.observed.clone())

    # --- divergence -------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        """Stop training and record why; the test then reports `diverged = 1`."""
        if self.failure is None:
            self.failure = reason.strip().splitlines()[0]
            log.error("run diverged: %s", self.failure)
            root = getattr(self.trainer, "default_root_dir", None)
            if root is not None and self.trainer.is_global_zero:
                Path(root).mkdir(parents=True, exist_ok=True)
                (Path(root) / "failure.txt").write_text(self.failure + "\n")
        self.trainer.should_stop = True

    def on_fit_start(self) -> None:
        reset_peak_rss()
        self._fit_start = time.perf_counter()
        if self.max_wall_s is not None:  # also cuts a single solve that overruns the budget
            self.block.set_deadline(self._fit_start + self.max_wall_s)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.failure is not None:
            return -1  # Lightning: skip the rest of this epoch
        if self.max_wall_s is not None and self._fit_start is not None:
            spent = time.perf_counter() - self._fit_start
            if spent > self.max_wall_s:
                self._fail(
                    f"wall-time budget model.max_wall_s={self.max_wall_s:g} s exceeded "
                    f"({spent:.1f} s) at step {self.global_step}"
                )
                return -1
        return None

    def on_train_end(self) -> None:
        self.block.set_deadline(None)  # evaluation is not under the training budget
        if self._fit_start is not None:
            self.train_wall_s = time.perf_counter() - self._fit_start

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        try:
            super().backward(loss, *args, **kwargs)
        except SolverError as err:  # the adjoint solve ran away
            self._fail(f"backward: {err}")
            for p in self.parameters():
                p.grad = None  # the optimizer then leaves every parameter as it was

    def on_after_backward(self) -> None:
        # NFEMonitor resets the counts when a batch starts and reads them when it ends;
        # here they hold this step's forward and backward evaluations.
        count = self.block.count
        self._nfe[0] += count.forward
        self._nfe[1] += count.backward
        self._nfe[2] += 1

    # --- training ---------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor | None:
        if len(batch) == 5:
            t, windows, mask, traj, starts = batch  # (T,), (T, B, D), (T, B), (B,), (B,)
            if self.initial_states is None:
                y0 = windows[0]
            else:
                y0 = self.initial_states[starts, traj]
        else:
            t, windows, starts = batch  # (T,), (T, B, D), (B,)
            mask = None
            y0 = windows[0] if self.initial_states is None else self.initial_states[starts]
        try:
            pred = self.block(y0, t)
        except SolverError as err:
            self._fail(f"forward: {err}")
            return None  # Lightning skips the optimizer step
        if mask is None:
            loss = self.loss_fn(pred, windows)
        else:
            weight = mask[..., None].to(pred.dtype).expand_as(pred)
            pointwise = self.loss_fn(pred, windows, reduction="none")
            loss = (pointwise * weight).sum() / weight.sum()
        if not torch.isfinite(loss):
            self._fail(f"training loss is {loss.item()} at step {self.global_step}")
            return None
        if writes_logs_now(self.trainer):  # a step's log call costs ~5% of a small ODE step
            self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=windows.shape[1])
        return loss

    # --- evaluation -------------------------------------------------------------------

    def _evaluate(self, traj: Trajectory | TrajectorySet, stage: str) -> None:
        if isinstance(traj, TrajectorySet):
            metrics = self._evaluate_set(traj, stage)
        else:
            pred = self.block(traj.true[0], traj.t)
            n = traj.n_train
            metrics = {
                "traj_mae": (pred[:n] - traj.true[:n]).abs().mean(),
                "field_rel_err": self._field_error(traj),
            }
            if traj.t.numel() > n:
                metrics["extrap_mae"] = (pred[n:] - traj.true[n:]).abs().mean()
            self._last_eval = (traj, pred.detach())
        # Under DDP each process scores the same trajectory; sync_dist averages them.
        self.log_dict(
            {f"{stage}/{k}": v for k, v in metrics.items()},
            prog_bar=stage == "val",
            sync_dist=True,
            batch_size=1,
        )

    def _evaluate_set(self, data: TrajectorySet, stage: str) -> dict[str, Any]:
        nan = torch.tensor(math.nan)
        keys = ("traj_mae", "traj_rel", "extrap_mae", "extrap_rel", "field_rel_err")
        metrics: dict[str, Any] = {}
        if self.failure is None:
            try:
                pred = self.block(data.true[0], data.t)  # (N, K, D) from the true starts
            except SolverError as err:
                self._fail(f"{stage} solve: {err}")
        if self.failure is not None:
            metrics = dict.fromkeys(keys, nan)
        else:
            err = (pred - data.true).abs() * data.unit  # original units
            n = data.n_train
            metrics["traj_mae"] = err[:n].mean()
            metrics["traj_rel"] = (err[:n].mean((0, 1)) / data.state_scale).mean()
            if data.t.numel() > n:
                metrics["extrap_mae"] = err[n:].mean()
                metrics["extrap_rel"] = (err[n:].mean((0, 1)) / data.state_scale).mean()
            metrics["field_rel_err"] = self._field_error(data)
            self._last_eval = (data, pred.detach())
        if stage == "test":
            steps = max(self._nfe[2], 1)
            metrics.update(
                nfe_forward_per_step=self._nfe[0] / steps,
                nfe_backward_per_step=self._nfe[1] / steps,
                train_wall_s=self.train_wall_s,
                peak_rss_mb=peak_rss_mb(),
                diverged=float(self.failure is not None),
            )
        return metrics

    def _field_error(self, traj: Trajectory | TrajectorySet) -> Tensor:
        learned = self.block.field(traj.t[0], traj.grid)
        return (learned - traj.grid_field).norm() / traj.grid_field.norm()

    def validation_step(self, traj: Trajectory | TrajectorySet, batch_idx: int) -> None:
        self._evaluate(traj, "val")

    def test_step(self, traj: Trajectory | TrajectorySet, batch_idx: int) -> None:
        self._evaluate(traj, "test")

    def figures(self) -> dict[str, Figure]:
        if self._last_eval is None:
            return {}
        traj, pred = self._last_eval
        if isinstance(traj, TrajectorySet):
            if traj.true.shape[-1] != 2:
                return {}  # the phase and field plots are two-dimensional
            # The first held-out trajectory, as the single-trajectory figures draw it.
            traj = Trajectory(
                t=traj.t,
                true=traj.true[:, 0],
                observed=traj.observed[:, 0],
                n_train=traj.n_train,
                grid=traj.grid,
                grid_field=traj.grid_field,
            )
            pred = pred[:, 0]
        # Lightning moves the module back to the CPU when fit ends; the cached
        # trajectory may still live on the GPU.
        with torch.no_grad():
            learned = self.block.field(traj.t[0].to(self.device), traj.grid.to(self.device))
        return dynamics_figures(traj, pred.cpu(), learned.cpu())
