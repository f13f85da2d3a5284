"""Is it an ODE? Re-test a trained ODE block with finer solvers (Ott et al., ICLR 2021).

A model trained with a coarse solver may rely on that solver's discretisation error: it is
then a residual network, not a continuous flow. Two checks tell:

* **finer solver**: re-run the block with a solver finer than the one it trained with and
  report how much its outputs (and a classifier's accuracy) move. Two finer settings:
  `finer_dopri5` (dopri5 at rtol = atol = 1e-5, or 10x below the training tolerances where
  those are already that fine: `fine_tolerance`) and `finer_fixed4x` (a fixed grid at four
  times the training steps: the training method at a quarter of its step for a fixed-grid
  training solver; for an adaptive training solver, rk4 at a step of span / (4 x the mean
  steps the training solver took), the steps estimated from its forward evaluations, see
  `mean_adaptive_steps`).
* **reconstruction**: integrate forward with the training solver, then backward from the
  end state, and report ||z0' - z0|| / ||z0||. A true flow is invertible; a field that only
  works at the training step reconstructs poorly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from odelab.ode.block import ODEBlock, State
from odelab.ode.config import Solver

FINE_TOL = 1e-5
TOL_FACTOR = 10  # how far below a training tolerance at or under FINE_TOL the re-test goes
FINER_FACTOR = 4
# Field evaluations per step of torchdiffeq's adaptive methods (FSAL pairs reuse the last
# stage); the first step's size selection costs two more evaluations.
EVALS_PER_STEP = {
    "dopri5": 6,
    "tsit5": 6,
    "bosh3": 3,
    "adaptive_heun": 2,
    "fehlberg2": 2,
    "dopri8": 12,
}
INITIAL_STEP_EVALS = 2


@dataclass
class BlockInput:
    """The state and output times one block received in one forward call."""

    y0: State
    t: Tensor


def _flat(state: State) -> Tensor:
    if isinstance(state, Tensor):
        return state.reshape(state.shape[0] if state.ndim else 1, -1)
    return torch.cat([s.reshape(s.shape[0] if s.ndim else 1, -1) for s in state], dim=1)


def _final(block: ODEBlock, out: State) -> State:
    """The end state of a block's output (a trajectory block returns every time)."""
    if not block.return_trajectory:
        return out
    return out[-1] if isinstance(out, Tensor) else tuple(s[-1] for s in out)


def relative_change(new: State, ref: State) -> float:
    """||new - ref|| / ||ref|| over the whole state (Frobenius norm)."""
    a, b = _flat(new).double(), _flat(ref).double()
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b).clamp_min(1e-30))


@contextlib.contextmanager
def capture_inputs(model: nn.Module) -> Iterator[dict[str, BlockInput]]:
    """Record the first input of every ODE block of `model` while the body runs.

    Yields:
        A dict from the block's module name to its first `BlockInput`, filled as the
        body's forward calls reach the blocks.
    """
    seen: dict[str, BlockInput] = {}
    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, ODEBlock):
            continue

        def hook(block: ODEBlock, args: tuple, kwargs: dict, name: str = name) -> None:
            if name in seen:
                return
            y0 = args[0] if args else kwargs["y0"]
            t = args[1] if len(args) > 1 else kwargs.get("t")
            times = block.t if t is None else torch.as_tensor(t)
            detach = (lambda s: s.detach()) if isinstance(y0, Tensor) else None
            y0 = detach(y0) if detach else tuple(s.detach() for s in y0)
            seen[name] = BlockInput(y0, times.detach().to(_first(y0)).clone())

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _first(state: State) -> Tensor:
    return state if isinstance(state, Tensor) else state[0]


def mean_adaptive_steps(solver: Solver, nfe: int) -> int:
    """Steps an adaptive solve took, estimated from its forward evaluations.

    Rule: (NFE - 2) / evaluations per step, rounded, at least 1 (accepted and rejected
    steps both count: they both cost the evaluations).
    """
    per_step = EVALS_PER_STEP.get(solver.method, 6)
    return max(1, round((nfe - INITIAL_STEP_EVALS) / per_step))


def fine_tolerance(solver: Solver) -> float:
    """The finer dopri5 run's rtol = atol: FINE_TOL, or TOL_FACTOR below the training solver's
    finest tolerance where that is FINE_TOL or finer (a re-test at the training tolerance
    would test nothing)."""
    tols = [tol for tol in (solver.rtol, solver.atol) if tol] if solver.adaptive else []
    finest = min(tols, default=math.inf)
    return finest / TOL_FACTOR if finest <= FINE_TOL else FINE_TOL


def finer_settings(block: ODEBlock, inp: BlockInput) -> dict[str, dict[str, Any]]:
    """The two finer solver settings for `block`, as `ODEBlock.solver_override` arguments."""
    solver, t = block.solver, inp.t
    span = float((t[-1] - t[0]).abs())
    if solver.adaptive:
        block.reset_nfe()
        with torch.no_grad():
            block(inp.y0, t)
        steps = mean_adaptive_steps(solver, block.nfe_forward)
        fixed = {"method": "rk4", "step_size": span / (FINER_FACTOR * steps)}
    else:
        # No step_size: the solver steps between the output times; the finest of those.
        step = solver.step_size or float((t[1:] - t[:-1]).abs().min())
        fixed = {"method": solver.method, "step_size": step / FINER_FACTOR}
    return {
        "finer_dopri5": {"method": "dopri5", "rtol": (tol := fine_tolerance(solver)), "atol": tol},
        "finer_fixed4x": fixed,
    }


@torch.no_grad()
def reconstruction_error(block: ODEBlock, y0: State, t: Tensor) -> float:
    """Forward over `t`, then back from the end state: ||z0' - z0|| / ||z0||."""
    z1 = _final(block, block(y0, t))
    back = _final(block, block(z1, torch.flip(t, dims=(0,))))
    return relative_change(back, y0)


@torch.no_grad()
def block_checks(block: ODEBlock, inp: BlockInput) -> dict[str, float]:
    """Finer-solver state change and reconstruction error of one block on one input.

    Returns:
        `<setting>/state_rel_change` for each finer setting (the end state's relative
        change against the training solver's), `<setting>/step_size` of the fixed grid,
        `<setting>/tol` of the finer dopri5 run, and `reconstruction_rel_err`.
    """
    ref = _final(block, block(inp.y0, inp.t))
    out: dict[str, float] = {}
    for name, changes in finer_settings(block, inp).items():
        with block.solver_override(**changes):
            fine = _final(block, block(inp.y0, inp.t))
        out[f"{name}/state_rel_change"] = relative_change(fine, ref)
        if "step_size" in changes:
            out[f"{name}/step_size"] = float(changes["step_size"])
        if "rtol" in changes:
            out[f"{name}/tol"] = float(changes["rtol"])
    out["reconstruction_rel_err"] = reconstruction_error(block, inp.y0, inp.t)
    return out


@contextlib.contextmanager
def all_overridden(blocks: Iterable[ODEBlock], settings: list[dict[str, Any]]) -> Iterator[None]:
    """Every block in its own override at once (models with several blocks)."""
    with contextlib.ExitStack() as stack:
        for block, changes in zip(blocks, settings, strict=True):
            stack.enter_context(block.solver_override(**changes))
        yield


@torch.no_grad()
def accuracy(
    predict: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]]
) -> float:
    """Fraction of correct labels of `predict` (logits) over `(x, y)` batches."""
    correct = total = 0
    for x, y in batches:
        correct += int((predict(x).argmax(dim=-1) == y).sum())
        total += int(y.numel())
    return correct / max(total, 1)


def is_labelled(batch: Any) -> bool:
    return (
        isinstance(batch, (tuple, list))
        and len(batch) == 2
        and isinstance(batch[1], Tensor)
        and not batch[1].is_floating_point()
    )


def evaluate(
    model: nn.Module,
    inputs: dict[str, BlockInput],
    predict: Callable[[Tensor], Tensor] | None = None,
    batches: list[Any] | None = None,
) -> dict[str, float]:
    """All validity metrics of `model`'s ODE blocks.

    Args:
        model: holds the ODE blocks (a task or a net).
        inputs: each block's recorded input (`capture_inputs`), keyed by module name.
        predict: maps inputs to logits (a classifier's forward); with `batches` of
            `(images, integer labels)`, accuracy under each finer setting is reported too.
        batches: evaluation batches for the accuracies.

    Returns:
        Flat metrics: `<setting>/state_rel_change`, `<setting>/step_size`,
        `<setting>/acc` and `train_solver/acc` (classifiers), `reconstruction_rel_err`; with
        several blocks the block-level keys carry the block name as a prefix.
    """
    was_training = model.training
    model.eval()
    try:
        named = [(n, m) for n, m in model.named_modules() if isinstance(m, ODEBlock)]
        named = [(n, m) for n, m in named if n in inputs]
        metrics: dict[str, float] = {}
        settings = {}
        for name, block in named:
            prefix = "" if len(named) == 1 else f"{name}/"
            settings[name] = finer_settings(block, inputs[name])
            for key, value in block_checks(block, inputs[name]).items():
                metrics[f"{prefix}{key}"] = value
        if predict is not None and batches and all(is_labelled(b) for b in batches):
            metrics["train_solver/acc"] = accuracy(predict, batches)
            for setting in ("finer_dopri5", "finer_fixed4x"):
                changes = [settings[n][setting] for n, _ in named]
                with all_overridden([m for _, m in named], changes):
                    metrics[f"{setting}/acc"] = accuracy(predict, batches)
        return metrics
    finally:
        model.train(was_training)


def evaluate_batches(
    model: nn.Module, batches: list[Any], predict: Callable[[Tensor], Tensor] | None = None
) -> dict[str, float]:
    """`evaluate` with the blocks' inputs recorded from `predict` on the first batch."""
    run = predict if predict is not None else model
    model.eval()
    with capture_inputs(model) as inputs, torch.no_grad():
        first = batches[0]
        run(first[0] if isinstance(first, (tuple, list)) else first)
    return evaluate(model, inputs, predict, batches)
