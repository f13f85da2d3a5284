"""Is it an ODE? (Ott et al. 2021) for a run trained before the callback existed.

Loads a finished run's config and checkpoint, runs its test loop once with the
`ODEValidity` callback (odelab/validity_callback.py) and writes the finer-solver and
reconstruction metrics (and the test metrics of the same batches, for comparison) to a
JSON record:

    python experiments/ode_validity.py --run logs/robust_cpu/odenet/0 --batches 4

New runs get the same metrics from `+callbacks@callbacks.ode_validity=ode_validity`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate

from odelab.errors import ConfigError
from odelab.ode import ODEBlock
from odelab.runs import load_run
from odelab.validity_callback import ODEValidity

VALIDITY_KEYS = ("finer_dopri5/", "finer_fixed4x/", "train_solver/", "reconstruction_rel_err")


def validity_metrics(run_dir: Path, checkpoint: Path | None, batches: int) -> dict[str, float]:
    """Test metrics of `batches` test batches and the validity metrics of the run's blocks."""
    run = load_run(run_dir)
    if run.config is None:
        raise ConfigError(f"--run {run_dir}: no config.yaml in it; pass a finished run folder")
    checkpoint = checkpoint or run_dir / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        raise ConfigError(f"--checkpoint {checkpoint} does not exist; pass --checkpoint PATH")
    model = instantiate(run.config.model)
    if not any(isinstance(m, ODEBlock) for m in model.modules()):
        raise ConfigError(f"--run {run_dir}: its model has no ODE block; nothing to check")
    data = instantiate(run.config.data)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[ODEValidity(max_batches=batches)],
        limit_test_batches=batches,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    # The task's setup (sized by the data) runs before the weights are restored.
    trainer.test(model, datamodule=data, ckpt_path=str(checkpoint), weights_only=True)
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: last.ckpt")
    parser.add_argument("--batches", type=int, default=4, help="test batches to evaluate")
    parser.add_argument("--out", type=Path, default=None, help="default: <run>/ode_validity.json")
    args = parser.parse_args(argv)
    try:
        torch.manual_seed(0)  # attacks and noisy test images draw from it
        metrics = validity_metrics(args.run, args.checkpoint, args.batches)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    record = {
        "run": str(args.run),
        "checkpoint": str(args.checkpoint or args.run / "checkpoints" / "last.ckpt"),
        "test_batches": args.batches,
        "metrics": metrics,
        "validity": {k: v for k, v in metrics.items() if any(s in k for s in VALIDITY_KEYS)},
    }
    out = args.out or args.run / "ode_validity.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    for key, value in record["validity"].items():
        print(f"{key:45s} {value:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
