"""Latent ODE on irregular times: the cost of the union-of-times batch, and NFE over training.

Two measurements in one invocation, so that they share the machine's load:

1. Union vs alone: one training step (loss, backward) of `experiment=latent_ode` on a
   batch of `--batch` series solved together on the union of their times, against the
   same series each solved alone (B steps of one series, gradients accumulated), on
   the default grid (times shared by the series: the union stays small) and on a fine
   grid (`--fine-grid` points: nearly every series brings its own times, the union
   grows with the batch), and on the experiment's grid with adjoint gradients. Reports
   seconds per step, the number of union times and of each series' own times, and the NFE
   of the encoder (forward) and of the decoder (forward and backward).
2. NFE over training: `--steps` Adam steps of the latent ODE (the experiment's data
   and optimizer; sensitivity from `--sensitivity`), recording the decoder's forward and
   backward NFE and the encoder's forward NFE at every step.

Usage:
    python experiments/bench_latent.py --out logs/bench_latent/bench_latent.json
    python experiments/bench_latent.py --steps 100 --repeats 2     # shorter
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from odelab.data.irregular import IrregularBatch
from odelab.harness import compose
from odelab.tasks.latent import LatentODE


def build(overrides: list[str]) -> tuple[LatentODE, object]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(["experiment=latent_ode", *overrides], Path(tmp), logger="none")
    torch.manual_seed(0)
    data = instantiate(cfg.data)
    data.setup()
    model = instantiate(cfg.model)
    if model.torch_threads is not None:
        torch.set_num_threads(model.torch_threads)
    return model, data


def _nfe(model: LatentODE) -> dict[str, int]:
    return {
        "encoder_forward": model.encoder.rnn.block.nfe_forward if model.encoder.rnn.block else 0,
        "decoder_forward": model.decoder.block.nfe_forward,
        "decoder_backward": model.decoder.block.nfe_backward,
    }


def _reset(model: LatentODE) -> None:
    for block in (model.encoder.rnn.block, model.decoder.block):
        if block is not None:
            block.reset_nfe()


def timed_step(model: LatentODE, batches: list[IrregularBatch]) -> tuple[float, dict[str, int]]:
    """Seconds and NFE of one training step over `batches` (one, or one per series)."""
    model.zero_grad()
    _reset(model)
    start = time.perf_counter()
    points = sum(int(b.target.sum()) for b in batches)
    for batch in batches:
        torch.manual_seed(0)
        terms = model.bounds(batch, 1)
        # The summed ELBO of all series, scaled as in training (per observed point).
        loss = -(terms["log_lik"] - terms["kl"]).sum() / points
        loss.backward()
    return time.perf_counter() - start, _nfe(model)


def union_vs_alone(
    grid_size: int | None, batch_size: int, repeats: int, sensitivity: str = "direct"
) -> dict[str, object]:
    grid = [] if grid_size is None else [f"data.grid_size={grid_size}"]
    model, data = build([*grid, f"sensitivity={sensitivity}"])
    split = data.splits["train"]
    batch = split.__getitems__(range(batch_size))
    alone = [batch.select([i]) for i in range(batch_size)]
    timed_step(model, [batch])  # warm-up: first-call checks, allocator
    rows: dict[str, list[float]] = {"union": [], "alone": []}
    nfe: dict[str, dict[str, int]] = {}
    for _ in range(repeats):
        for name, batches in (("union", [batch]), ("alone", alone)):
            seconds, counts = timed_step(model, batches)
            rows[name].append(seconds)
            nfe[name] = counts
    own = [a.times.numel() for a in alone]
    return {
        "grid_size": data.grid_size,
        "sensitivity": sensitivity,
        "batch_size": batch_size,
        "union_times": batch.times.numel(),
        "own_times_mean": statistics.fmean(own),
        "union_seconds": statistics.median(rows["union"]),
        "alone_seconds": statistics.median(rows["alone"]),
        "union_nfe": nfe["union"],
        "alone_nfe": nfe["alone"],
        "repeats": repeats,
    }


def nfe_over_training(steps: int, sensitivity: str) -> dict[str, object]:
    model, data = build([f"sensitivity={sensitivity}"])
    # Outside a Trainer the step counter stays at 0; the full ELBO (KL weight 1) is trained.
    model.kl_warmup_steps = 0
    optimizer = torch.optim.Adam(model.parameters(), lr=model.optimizer_factory.keywords["lr"])
    record: dict[str, list[float]] = {
        "step": [],
        "decoder_forward": [],
        "decoder_backward": [],
        "encoder_forward": [],
        "loss": [],
        "seconds": [],
    }
    loader = data.train_dataloader()
    step = 0
    while step < steps:
        for batch in loader:
            if step >= steps:
                break
            _reset(model)
            start = time.perf_counter()
            optimizer.zero_grad()
            loss, _ = model.training_loss(batch)
            loss.backward()
            optimizer.step()
            record["seconds"].append(time.perf_counter() - start)
            for key, value in _nfe(model).items():
                record[key].append(value)
            record["loss"].append(loss.item())
            record["step"].append(step)
            step += 1
    return {"sensitivity": sensitivity, "steps": steps, **record}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("logs/bench_latent/bench_latent.json"))
    parser.add_argument("--batch", type=int, default=50, help="series per batch")
    parser.add_argument("--fine-grid", type=int, default=1501, help="grid points of the fine grid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="training steps of part 2")
    parser.add_argument("--sensitivity", default="adjoint", choices=["adjoint", "direct"])
    args = parser.parse_args(argv)

    start = time.perf_counter()
    settings = [(None, "direct"), (args.fine_grid, "direct"), (None, "adjoint")]
    union = [union_vs_alone(g, args.batch, args.repeats, s) for g, s in settings]
    for row in union:
        print(
            f"grid {row['grid_size']:>5} ({row['sensitivity']}): "
            f"union of {row['union_times']} times "
            f"(each series alone: {row['own_times_mean']:.1f}); step {row['union_seconds']:.3f} s "
            f"union vs {row['alone_seconds']:.3f} s alone; decoder NFE "
            f"{row['union_nfe']['decoder_forward']} vs {row['alone_nfe']['decoder_forward']} "
            f"forward, {row['union_nfe']['decoder_backward']} vs "
            f"{row['alone_nfe']['decoder_backward']} backward; "
            f"encoder NFE {row['union_nfe']['encoder_forward']} vs "
            f"{row['alone_nfe']['encoder_forward']}",
            flush=True,
        )
    training = nfe_over_training(args.steps, args.sensitivity)
    fwd, bwd = training["decoder_forward"], training["decoder_backward"]
    tenth = max(1, args.steps // 10)
    print(
        f"latent ODE decoder NFE per step ({args.sensitivity}): first {tenth} steps "
        f"{statistics.fmean(fwd[:tenth]):.0f} fwd / {statistics.fmean(bwd[:tenth]):.0f} bwd, "
        f"last {tenth} steps {statistics.fmean(fwd[-tenth:]):.0f} fwd / "
        f"{statistics.fmean(bwd[-tenth:]):.0f} bwd"
    )
    record = {
        "device": {"torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "union_vs_alone": union,
        "nfe_over_training": training,
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
