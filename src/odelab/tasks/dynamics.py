"""Recover an unknown vector field from noisy observations of one trajectory."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from odelab.callbacks import writes_logs_now
from odelab.data.trajectories import Trajectory
from odelab.errors import ConfigError
from odelab.ode import ODEBlock, Sensitivity, Solver
from odelab.plotting import dynamics_figures
from odelab.tasks.base import OdelabTask

LOSSES = {"l1": nn.functional.l1_loss, "mse": nn.functional.mse_loss}


class DynamicsRecovery(OdelabTask):
    """Fits `dz/dt = field(z)` so that solves from window starts match the windows.

    Metrics (val/ and test/): `traj_mae` solving the whole observed span from the
    true initial state, `extrap_mae` beyond it, `field_rel_err` the relative
    RMS error of the learned field on a grid around the trajectory.

    Args:
        field: the vector field to learn.
        solver, sensitivity: how windows are integrated.
        loss: "l1" or "mse" between solved and observed windows.
        learn_initial_states: start each window from a learned state, one per
            observation time, initialised at the observation (multiple
            shooting). With noisy data a window started at a noisy observation
            carries that noise through its whole solve; learned starts are
            pulled onto a path the field can follow. "auto" learns them when
            the data are noisy (`data.noise_std > 0`).
    """

    def __init__(
        self,
        field: nn.Module,
        solver: Solver,
        sensitivity: Sensitivity,
        loss: str = "l1",
        learn_initial_states: bool | str = "auto",
        **optim: object,
    ):
        super().__init__(**optim)
        if learn_initial_states not in (True, False, "auto"):
            raise ConfigError(
                f"model.learn_initial_states={learn_initial_states!r}; choose true, false or auto"
            )
        if loss not in LOSSES:
            raise ConfigError(f"model.loss={loss!r}; choose one of {sorted(LOSSES)}")
        self.block = ODEBlock(
            field, solver, sensitivity, return_trajectory=True, name="model.field"
        )
        self.loss_fn = LOSSES[loss]
        self.learn_initial_states = learn_initial_states
        self.initial_states: nn.Parameter | None = None
        self._last_eval: tuple[Trajectory, Tensor] | None = None

    def setup(self, stage: str) -> None:
        # Sized by the data, which Lightning sets up before the module; created
        # before the optimizer and before a checkpoint is restored.
        if self.initial_states is not None:
            return
        data = self.trainer.datamodule
        learn = self.learn_initial_states
        if learn == "auto":
            learn = data.noise_std > 0
        if learn:
            self.initial_states = nn.Parameter(data.trajectory.observed.clone())

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        t, windows, starts = batch  # (T,), (T, B, D), (B,)
        y0 = windows[0] if self.initial_states is None else self.initial_states[starts]
        pred = self.block(y0, t)
        loss = self.loss_fn(pred, windows)
        if writes_logs_now(self.trainer):  # a step's log call costs ~5% of a small ODE step
            self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=windows.shape[1])
        return loss

    def _evaluate(self, traj: Trajectory, stage: str) -> None:
        pred = self.block(traj.true[0], traj.t)
        n = traj.n_train
        metrics = {
            "traj_mae": (pred[:n] - traj.true[:n]).abs().mean(),
            "field_rel_err": self._field_error(traj),
        }
        if traj.t.numel() > n:
            metrics["extrap_mae"] = (pred[n:] - traj.true[n:]).abs().mean()
        # Under DDP each process scores the same trajectory; sync_dist averages them.
        self.log_dict(
            {f"{stage}/{k}": v for k, v in metrics.items()},
            prog_bar=stage == "val",
            sync_dist=True,
            batch_size=1,
        )
        self._last_eval = (traj, pred.detach())

    def _field_error(self, traj: Trajectory) -> Tensor:
        learned = self.block.field(traj.t[0], traj.grid)
        return (learned - traj.grid_field).norm() / traj.grid_field.norm()

    def validation_step(self, traj: Trajectory, batch_idx: int) -> None:
        self._evaluate(traj, "val")

    def test_step(self, traj: Trajectory, batch_idx: int) -> None:
        self._evaluate(traj, "test")

    def figures(self) -> dict[str, Figure]:
        if self._last_eval is None:
            return {}
        traj, pred = self._last_eval
        # Lightning moves the module back to the CPU when fit ends; the cached
        # trajectory may still live on the GPU.
        with torch.no_grad():
            learned = self.block.field(traj.t[0].to(self.device), traj.grid.to(self.device))
        return dynamics_figures(traj, pred.cpu(), learned.cpu())
