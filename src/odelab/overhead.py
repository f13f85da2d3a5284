"""odelab's training step against a hand-written loop doing the same work (the spiral).

Both loops run in one process, alternating which goes first, so they share the machine's
load: `experiments/bench_spiral.py` and `experiments/bench_speed.py` report the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torchdiffeq import odeint

from odelab.harness import compose, run_quietly


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The spiral config on the CPU, quiet and without a logger: only the work itself is timed."""
    return compose(
        ["trainer=cpu", *overrides], output_dir, logger="none", log_dir=output_dir / "logs"
    )


# ---------------------------------------------------------------------------
# 1. Framework overhead


class StepWindowTimer(L.Callback):
    """Times training steps `warmup` .. `warmup + steps - 1` (data fetch and hooks included).

    The clock starts at the end of step `warmup - 1`, so the window holds exactly
    `steps` whole iterations of Lightning's loop. The result and the final
    weights go to the class attribute `last`, read once `run` returns.
    """

    last: ClassVar[dict[str, Any]] = {}

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self._start = (0.0, 0.0)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        done = trainer.global_step  # optimizer steps taken so far
        if done == self.warmup:
            self._start = time.perf_counter(), time.process_time()
        elif done == self.warmup + self.steps:
            StepWindowTimer.last["seconds"] = time.perf_counter() - self._start[0]
            StepWindowTimer.last["cpu_seconds"] = time.process_time() - self._start[1]

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        StepWindowTimer.last["params"] = [p.detach().clone() for p in module.parameters()]


def overhead_config(seed: int, warmup: int, steps: int, workdir: Path) -> DictConfig:
    """The spiral recipe for `warmup + steps` steps: no validation, checkpoints or figures."""
    return compose_config(
        [
            "experiment=spiral",
            f"seed={seed}",
            f"trainer.max_steps={warmup + steps}",
            "trainer.limit_val_batches=0",
            "+trainer.enable_checkpointing=false",
            "~callbacks.model_checkpoint",
            "~callbacks.save_figures",
            "~callbacks.on_exception_checkpoint",
            "test=false",
            "+callbacks.window_timer._target_=odelab.overhead.StepWindowTimer",
            f"+callbacks.window_timer.warmup={warmup}",
            f"+callbacks.window_timer.steps={steps}",
        ],
        workdir,
    )


def odelab_steps(cfg: DictConfig) -> dict[str, Any]:
    """Train through `odelab.train.run` (NFEMonitor and StepTimer on, as by default)."""
    StepWindowTimer.last = {}
    run_quietly(cfg)
    return dict(StepWindowTimer.last)


def plain_steps(cfg: DictConfig, warmup: int, steps: int) -> dict[str, Any]:
    """The same training written as a plain torch + torchdiffeq loop."""
    L.seed_everything(cfg.seed, verbose=False)
    data = instantiate(cfg.data)  # only to get the same observations; not timed
    data.setup("fit")
    observed = data.trajectory.observed
    times = data.trajectory.t
    L.seed_everything(cfg.seed, verbose=False)  # as `run` does: same initial weights
    field = instantiate(cfg.model.field)
    optimizer = instantiate(cfg.model.optimizer)(params=field.parameters())
    scheduler = None
    if cfg.model.scheduler is not None:
        scheduler = instantiate(cfg.model.scheduler)(optimizer=optimizer)
    solver = cfg.solver
    odeint_kwargs = {
        "method": solver.method,
        "rtol": solver.rtol,
        "atol": solver.atol,
        "options": {"max_num_steps": solver.max_num_steps},
    }
    clip = cfg.trainer.gradient_clip_val
    loss_fn = nn.functional.l1_loss if cfg.model.loss == "l1" else nn.functional.mse_loss

    def window_length(epoch: int) -> int:  # the data config's curriculum, if any
        first, final, growth = data.batch_time, data.batch_time_final, data.batch_time_growth_epochs
        if final is None:
            return first
        return final if epoch >= growth else round(first + (final - first) * epoch / growth)

    def batches() -> Any:
        epoch = 0
        while True:  # the windows odelab's sampler draws, epoch by epoch
            length = window_length(epoch)
            offsets = torch.arange(length)
            gen = torch.Generator().manual_seed(data.seed * 100_003 + epoch)
            starts = torch.randint(
                observed.shape[0] - length + 1,
                (data.batches_per_epoch, data.batch_size),
                generator=gen,
            )
            for row in starts:
                yield times[:length], observed[row[:, None] + offsets].transpose(0, 1)
            epoch += 1

    start, cpu_start = 0.0, 0.0
    for step, (t_window, windows) in enumerate(batches()):
        if step == warmup:
            start, cpu_start = time.perf_counter(), time.process_time()
        if step == warmup + steps:
            break
        pred = odeint(field, windows[0], t_window, **odeint_kwargs)
        loss = loss_fn(pred, windows)
        optimizer.zero_grad()
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(field.parameters(), clip)
        optimizer.step()
        if scheduler is not None and cfg.model.scheduler_interval == "step":
            scheduler.step()
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "params": [p.detach().clone() for p in field.parameters()],
    }


def overhead(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Print per-step times of both loops; return them (ms per step, every repeat) as a record.

    Process CPU time is printed beside wall time: on a shared machine it is
    less sensitive to other programs stealing the cores.
    """
    steps, warmup = args.overhead_steps, args.warmup
    print(f"\n== 1. framework overhead: {steps} training steps timed after {warmup} warm-up")
    cfg = overhead_config(0, warmup, steps, workdir / "overhead")
    times: dict[str, dict[str, list[float]]] = {
        side: {"seconds": [], "cpu_seconds": []} for side in ("plain", "odelab")
    }
    weights: dict[str, list[Tensor]] = {}
    for rep in range(args.repeats):
        order = ("plain", "odelab") if rep % 2 == 0 else ("odelab", "plain")
        for side in order:  # alternate who goes first: neither always gets a cold start
            result = plain_steps(cfg, warmup, steps) if side == "plain" else odelab_steps(cfg)
            for key, series in times[side].items():
                series.append(1e3 * result[key] / steps)
            weights[side] = result["params"]
            print(
                f"  repeat {rep}  {side:<6} wall {times[side]['seconds'][-1]:7.2f} ms/step   "
                f"cpu {times[side]['cpu_seconds'][-1]:7.2f} ms/step",
                flush=True,
            )
    pairs = zip(weights["plain"], weights["odelab"], strict=True)
    diff = max(float((a - b).abs().max()) for a, b in pairs)
    med = {side: {k: statistics.median(v) for k, v in t.items()} for side, t in times.items()}
    for side, label in (("plain", "plain torch + torchdiffeq"), ("odelab", "odelab")):
        print(
            f"  {label:<26} wall {med[side]['seconds']:7.2f} ms/step   "
            f"cpu {med[side]['cpu_seconds']:7.2f} ms/step   (medians of {args.repeats})"
        )
    print(f"  same work check: max |weight difference| after training = {diff:.1e}")
    ratio = med["odelab"]["seconds"] / med["plain"]["seconds"]
    cpu_ratio = med["odelab"]["cpu_seconds"] / med["plain"]["cpu_seconds"]
    print(
        f"  OVERHEAD RATIO odelab / plain = {ratio:.3f} wall, {cpu_ratio:.3f} cpu   (target <= "
        "1.10)"
    )
    return {
        "steps": steps,
        "warmup": warmup,
        "repeats": args.repeats,
        "ms_per_step": times,
        "max_weight_difference": diff,
    }
