"""Planar flow with K layers vs CNF with M hidden units (Chen et al. 2018, figure 4).

Trains `experiment=planar_flow` with K in {1, 32, 64} and `experiment=cnf_toy`
with the seed paper's hyper-network field (`model/flow/field=hyper`) with M in
{1, 32, 64} on the same targets for the same number of steps, then draws one
figure: a row per target, the true density (or data histogram) and every
model's learned density, each titled with its test NLL.

Usage:
    python experiments/cnf_capacity.py --epochs 5 --out logs/cnf_capacity \
        --figure experiments/reports/cnf_capacity.png
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np

from odelab.data.toy2d import sample
from odelab.harness import launch
from odelab.plotting import plt

SIZES = (1, 32, 64)
TARGETS = ("8gaussians", "2spirals")


def models() -> list[tuple[str, list[str]]]:
    planar = [
        (f"planar K={k}", ["experiment=planar_flow", f"model.flow.layers={k}"]) for k in SIZES
    ]
    cnf = [
        (
            f"CNF M={m}",
            ["experiment=cnf_toy", "model/flow/field=hyper", f"model.flow.field.units={m}"],
        )
        for m in SIZES
    ]
    return planar + cnf


def draw(results: dict[str, dict[str, dict]], out: Path, figure: Path) -> None:
    names = [name for name, _ in models()]
    fig, axes = plt.subplots(
        len(results),
        len(names) + 1,
        figsize=(2.2 * (len(names) + 1), 2.4 * len(results)),
        squeeze=False,
    )
    for row, (target, runs) in enumerate(results.items()):
        for col, name in enumerate(["true", *names]):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            grid = np.load(
                out
                / target
                / _slug(names[0] if name == "true" else name)
                / "plots"
                / "density_grid.npz"
            )
            extent = float(grid["axis"][-1])
            if name == "true":
                image, title = grid["true"], f"{target}\ntrue density"
                if image.size == 0:  # no closed form: a histogram of test-seed samples
                    points = sample(target, 50_000, seed=2024).numpy()
                    ax.hist2d(
                        points[:, 0],
                        points[:, 1],
                        bins=80,
                        range=[[-extent, extent]] * 2,
                        cmap="magma",
                    )
                    ax.set_title(f"{target}\ndata histogram", fontsize=8)
                    continue
            else:
                image, title = grid["learned"], f"{name}\nNLL {runs[name]['test/nll']:.2f}"
            ax.imshow(
                image, origin="lower", extent=(-extent, extent, -extent, extent), cmap="magma"
            )
            ax.set_title(title, fontsize=8)
    fig.suptitle("Planar flow (K layers) vs CNF (M hidden units), same steps")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    plt.close(fig)


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace("=", "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--epochs", type=int, default=5, help="epochs of data.batches_per_epoch steps"
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--out", type=Path, default=Path("logs/cnf_capacity"))
    parser.add_argument("--figure", type=Path, default=Path("experiments/reports/cnf_capacity.png"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse runs that already wrote metrics.json and resume unfinished ones",
    )
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args(argv)

    results: dict[str, dict[str, dict]] = {}
    print(f"{'target':>11} {'model':>12} {'test NLL':>9} {'minutes':>8}")
    for target in args.targets:
        results[target] = {}
        for name, overrides in models():
            common = [
                f"data.name={target}",
                f"trainer.max_epochs={args.epochs}",
                f"data.batch_size={args.batch}",
                *args.overrides,
            ]
            run_dir = args.out / target / _slug(name)
            if args.resume and (run_dir / "metrics.json").is_file():
                metrics, seconds = json.loads((run_dir / "metrics.json").read_text()), math.nan
            else:
                if not args.resume:  # a fresh measurement (as reproduce.py without --resume)
                    shutil.rmtree(run_dir, ignore_errors=True)
                resume = ["resume=true"] if args.resume else []
                launched = launch(overrides + common + resume, run_dir)
                metrics, seconds = launched.metrics, launched.seconds
            results[target][name] = {**metrics, "minutes": seconds / 60}
            print(
                f"{target:>11} {name:>12} {metrics['test/nll']:>9.3f} {seconds / 60:>8.1f}",
                flush=True,
            )
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    draw(results, args.out, args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
