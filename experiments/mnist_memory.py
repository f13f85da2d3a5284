"""Peak memory of one ODE-Net training step vs the integration horizon, adjoint vs direct.

Chen et al. 2018 (Table 1, Section 2): back-propagating through the solver
stores every function evaluation, so memory grows with the number of
evaluations (NFE); the adjoint method stores none of them, so memory stays
constant. This integrates ODE-Net's block over [0, T] for T = 1, 2, 4, 8 and
measures one training step (forward, loss, backward) with each sensitivity:

- with dopri5 (rtol = atol = 1e-3), the paper's solver: NFE is whatever the
  adaptive solver needs for that horizon;
- with rk4 on a fixed step, so NFE is proportional to T.

On GPU the figure is torch.cuda.max_memory_allocated above the pre-step level;
on CPU it is the torch profiler's allocation accounting (all allocations the
step makes, including the solver's working tensors and the adjoint's backward
solve); the autograd saved-tensor peak is reported beside it (see
odelab.profiling).

    python experiments/mnist_memory.py --out experiments/reports
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from odelab.models.odenet import ODENet
from odelab.ode import Sensitivity, Solver
from odelab.profiling import MIB, describe_device, training_step_memory

SOLVERS = {
    "dopri5": Solver(method="dopri5", rtol=1e-3, atol=1e-3),
    "rk4": Solver(method="rk4", step_size=0.25, rtol=None, atol=None),
}


def load_batch(batch_size: int, data_root: Path) -> tuple[Tensor, Tensor, str]:
    """Real MNIST test images when present, else uniform noise (the source is reported)."""
    from odelab.data.images import SOURCES, load_split
    from odelab.errors import DataMissingError

    try:
        images, labels = load_split(data_root, SOURCES["mnist"], "test", download=False)
        x = images[:batch_size].unsqueeze(1).float() / 255.0
        return x, labels[:batch_size], f"the first {batch_size} MNIST test images"
    except DataMissingError:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(batch_size, 1, 28, 28, generator=gen)
        return x, torch.arange(batch_size) % 10, "uniform noise images (MNIST files not found)"


def measure(
    solver: Solver,
    sensitivity: str,
    horizon: float,
    x: Tensor,
    y: Tensor,
    state_dict: dict[str, Tensor] | None,
    channels: int,
) -> dict[str, float | str | None]:
    torch.manual_seed(0)
    net = ODENet(solver, Sensitivity(method=sensitivity), channels=channels, t_end=horizon)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    net = net.to(x.device)
    start = time.perf_counter()
    memory = training_step_memory(net, lambda: torch.nn.functional.cross_entropy(net(x), y))
    elapsed = time.perf_counter() - start
    return {
        "solver": solver.method,
        "sensitivity": sensitivity,
        "T": horizon,
        "nfe_forward": net.block.nfe_forward,
        "nfe_backward": net.block.nfe_backward,
        "peak_mb": memory.peak / MIB,
        "saved_activations_mb": memory.saved_activations / MIB,
        "cpu_allocations_mb": None if memory.allocations is None else memory.allocations / MIB,
        "cuda_peak_mb": None if memory.cuda_peak is None else memory.cuda_peak / MIB,
        "step_time_s": elapsed,
    }


def load_net_weights(checkpoint: Path) -> dict[str, Tensor]:
    """The ODENet weights of an ImageClassifier checkpoint (keys under `net.`)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def ratios(rows: list[dict], solver: str) -> dict[str, float]:
    """Adjoint max/min over T and direct T_max/T_min, the two numbers the claim is about."""
    out = {}
    for sens in ("adjoint", "direct"):
        picked = sorted(
            (r for r in rows if r["solver"] == solver and r["sensitivity"] == sens),
            key=lambda r: r["T"],
        )
        peaks = [r["peak_mb"] for r in picked]
        if not peaks:
            continue
        if sens == "adjoint":
            out["adjoint_max_over_min"] = max(peaks) / min(peaks)
        else:
            out["direct_last_over_first"] = peaks[-1] / peaks[0]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--horizons", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="ImageClassifier checkpoint of an ODE-Net run to take the weights from",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist",
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/reports"))
    args = parser.parse_args(argv)

    x, y, source = load_batch(args.batch_size, args.data_root)
    x, y = x.to(args.device), y.to(args.device)
    state = load_net_weights(args.checkpoint) if args.checkpoint else None
    # One discarded step first: the first call pays for one-time kernel set-up.
    measure(
        SOLVERS[args.solvers[0]], "direct", min(args.horizons), x[:2], y[:2], state, args.channels
    )
    rows = []
    for solver_name in args.solvers:
        for sens in ("direct", "adjoint"):
            for horizon in args.horizons:
                row = measure(SOLVERS[solver_name], sens, horizon, x, y, state, args.channels)
                rows.append(row)
                print(
                    f"{solver_name:7s} {sens:8s} T={horizon:<4g} NFE {row['nfe_forward']:>4}/"
                    f"{row['nfe_backward']:<4} peak {row['peak_mb']:8.2f} MiB  "
                    f"saved {row['saved_activations_mb']:8.2f} MiB  {row['step_time_s']:.1f}s",
                    flush=True,
                )
    summary = {s: ratios(rows, s) for s in args.solvers}
    result = {
        "device": describe_device(torch.device(args.device)),
        "batch_size": args.batch_size,
        "channels": args.channels,
        "weights": str(args.checkpoint) if args.checkpoint else "random initialisation (seed 0)",
        "inputs": source,
        "measure": "cuda max_memory_allocated above pre-step level"
        if args.device.startswith("cuda")
        else "CPU allocations during the step (torch profiler memory accounting)",
        "rows": rows,
        "ratios": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mnist_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    for solver_name, r in summary.items():
        print(
            f"{solver_name}: adjoint max/min = {r.get('adjoint_max_over_min', float('nan')):.3f}, "
            f"direct T={max(args.horizons):g} / T={min(args.horizons):g} = "
            f"{r.get('direct_last_over_first', float('nan')):.2f}"
        )
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
