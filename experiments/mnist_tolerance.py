"""Solver tolerance vs NFE, time and test error for a trained ODE-Net (Chen et al. 2018, Figure 3).

Takes one finished ODE-Net run (made with logger=csv), loads its last checkpoint
and, for each tolerance (rtol = atol), measures on the run's own test split:
test error, forward NFE and seconds per evaluation batch (the fastest batch);
and on one training batch: forward and backward (adjoint) NFE and the time of
forward + backward (the fastest of `--repeats`). Fastest, because on a shared
machine other jobs only ever add time. CPU seconds (process time, all threads)
are reported beside wall seconds: they depend far less on other jobs.
The network is trained once at the run's tolerance; only the solve changes.

    python experiments/mnist_tolerance.py --run logs/mnist_quick/odenet --out experiments/reports

Training at each tolerance instead is a multirun:
    python run.py -m experiment=mnist_odenet logger=csv tol=1e-1,1e-2,1e-3,1e-4,1e-5
(each run's NFE and error are in its metrics).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from odelab.errors import ConfigError
from odelab.ode import ODEBlock
from odelab.profiling import describe_device, wait_for_device
from odelab.reports.base import relative_path
from odelab.runs import load_run

TOLERANCES = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]


def load_classifier(run_dir: Path) -> tuple[torch.nn.Module, object, dict]:
    """The trained ImageClassifier of a run, its data module (set up) and its config."""
    run = load_run(run_dir)
    model = instantiate(run.config.model)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    data = instantiate(run.config.data)
    data.setup("test")
    return model.eval(), data, run.config


def find_odenet_run(path: Path) -> Path:
    """`path` itself when it is a run folder, else its first finished mnist_odenet job."""
    if (path / ".hydra" / "config.yaml").is_file():
        return path
    for config_file in sorted(path.glob("*/*/.hydra/config.yaml")):
        run = load_run(config_file.parent.parent)
        if run.ok and run.config is not None and run.config.get("task_name") == "mnist_odenet":
            return run.path
    raise ConfigError(f"--run {path}: no finished mnist_odenet run in it")


def set_tolerance(model: torch.nn.Module, tol: float) -> list[ODEBlock]:
    blocks = [m for m in model.modules() if isinstance(m, ODEBlock)]
    for block in blocks:
        block.solver = dataclasses.replace(block.solver, rtol=tol, atol=tol)
        block.reset_nfe()
    return blocks


def evaluate(model, blocks, images, labels, batch_size: int) -> dict[str, float]:
    """Test error, mean forward NFE per batch and the fastest batch's seconds.

    The fastest batch, not the mean: on a shared machine other jobs only ever add time.
    CPU seconds (process time, all threads) are reported beside wall seconds: they depend
    far less on other jobs.
    """
    device = next(model.parameters()).device
    errors, nfe, batches = 0, 0, 0
    seconds = cpu_seconds = float("inf")
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].to(device).unsqueeze(1).float() / 255.0
            y = labels[start : start + batch_size].to(device)
            for b in blocks:
                b.reset_nfe()
            tic, cpu_tic = time.perf_counter(), time.process_time()
            pred = model(x).argmax(dim=-1)
            wait_for_device(device)
            seconds = min(seconds, time.perf_counter() - tic)
            cpu_seconds = min(cpu_seconds, time.process_time() - cpu_tic)
            nfe += sum(b.nfe_forward for b in blocks)
            errors += int((pred != y).sum())
            batches += 1
    return {
        "test_error": errors / len(labels),
        "test_nfe_forward": nfe / batches,
        "test_seconds_per_batch": seconds,
        "test_cpu_seconds_per_batch": cpu_seconds,
    }


def training_step(model, blocks, images, labels, repeats: int = 1) -> dict[str, float]:
    """Forward and backward NFE of one training step and its fastest time over `repeats`."""
    device = next(model.parameters()).device
    x, labels = images.to(device).unsqueeze(1).float() / 255.0, labels.to(device)
    elapsed = cpu = float("inf")
    for _ in range(repeats):
        for b in blocks:
            b.reset_nfe()
        model.zero_grad()
        tic, cpu_tic = time.perf_counter(), time.process_time()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        wait_for_device(device)
        elapsed = min(elapsed, time.perf_counter() - tic)
        cpu = min(cpu, time.process_time() - cpu_tic)
    return {
        "train_nfe_forward": sum(b.nfe_forward for b in blocks),
        "train_nfe_backward": sum(b.nfe_backward for b in blocks),
        "train_step_seconds": elapsed,
        "train_step_cpu_seconds": cpu,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run",
        type=Path,
        required=True,
        help="a finished ODE-Net run folder, or a folder of sweeps (its first ODE-Net job)",
    )
    parser.add_argument("--tols", type=float, nargs="+", default=TOLERANCES)
    parser.add_argument("--test-images", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=125)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed training steps; the fastest counts"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("experiments/reports"))
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    args.run = find_odenet_run(args.run)
    model, data, config = load_classifier(args.run)
    model = model.to(args.device)
    test_images, test_labels = data.splits["test"].tensors
    test_images, test_labels = test_images[: args.test_images], test_labels[: args.test_images]
    train_images, train_labels = data.splits["train"].tensors
    train_images, train_labels = train_images[: args.train_batch], train_labels[: args.train_batch]
    # Untimed passes first, at the timed shapes: the first call pays for kernel set-up.
    blocks = set_tolerance(model, args.tols[0])
    training_step(model, blocks, train_images, train_labels)
    evaluate(
        model,
        blocks,
        test_images[: args.batch_size],
        test_labels[: args.batch_size],
        args.batch_size,
    )
    rows = []
    for tol in args.tols:
        blocks = set_tolerance(model, tol)
        row = {"tol": tol}
        row.update(evaluate(model, blocks, test_images, test_labels, args.batch_size))
        row.update(training_step(model, blocks, train_images, train_labels, args.repeats))
        rows.append(row)
        print(
            f"tol {tol:.0e}: test error {100 * row['test_error']:.2f} %  NFE test "
            f"{row['test_nfe_forward']:.0f}"
            f"  train step NFE {row['train_nfe_forward']}/{row['train_nfe_backward']}"
            f"  {row['train_step_seconds']:.2f} s/step  {row['test_seconds_per_batch']:.2f} "
            "s/test batch (fastest)",
            flush=True,
        )
    result = {
        "run": relative_path(args.run),
        "trained_tol": float(config.solver.rtol),
        "sensitivity": str(config.sensitivity.method),
        "test_images": len(test_labels),
        "eval_batch_size": args.batch_size,
        "train_batch_size": args.train_batch,
        "repeats": args.repeats,
        "data": data.describe(),
        "device": describe_device(torch.device(args.device)),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mnist_tolerance.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
