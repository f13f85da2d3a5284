"""Gradient-masking checks on the trained models of a robustness budget (Yan et al. 2020).

For every finished run of the budget's sweeps (CNN, ODENet, TisODE; each data set,
training recipe and seed asked for) it loads `checkpoints/last.ckpt`, takes the first
`--images` test images (the same for every model: the budgets fix `data.seed`) and writes
one JSON record per run into `--out`:

- `grid`: FGSM and PGD accuracy on a fine epsilon grid (PGD must fall: `pgd_monotone`;
  FGSM is recorded as measured);
- `curve`: PGD accuracy against steps (10, 20, 50, 100) and restarts (1, 5) at the check
  epsilon (the grid point whose PGD accuracy is nearest half the clean accuracy) and one
  stated step size, each configuration with fresh random starts (`never_rises` can fail);
- `square`: the gradient-free Square attack at the check epsilon beside PGD and FGSM on the
  same images (`beats_gradient`: Square finds more than the best gradient attack);
- `solvers` (ODE nets): the net deployed with dopri5 (per image, via torchode), attacked by
  PGD and FGSM through dopri5, through fixed-step rk4 and Euler surrogates of the same
  weights, and by transfer from the CNN of the same data, recipe and seed; `worst` (the
  minimum over both attacks and every source) is the robust accuracy to quote;
- `independent`: our FGSM and PGD beside the Adversarial Robustness Toolbox's on the Square
  images (`fgsm_same`; PGD without a random start makes the same images; `pgd_as_strong`).

    python experiments/robust_checks.py --runs logs/reproduce/robust/cpu --out <bench dir> --jobs 2

The stages are `odelab.attacks.masking`; the record has one schema,
`odelab.records.robust.CheckRecord`, checked on every write and read (a stored record
that does not match it is made again).

A record is written after each stage (`complete: false` until the last), atomically, with
the settings that made it, the SHA-256 of the weights checked (their tensors) and of the
run's metrics (timings aside); a rerun keeps the finished stages of a record made with the
same settings and weights and redoes the rest, so an interrupted budget resumes where it
stopped, and a chunk's models can be checked before `reproduce.py --from-parts` moves them
into the full budget's folder. `--jobs` checks that many models at once, one torch thread
each. Checkpoints are never committed: a finished record of a run whose checkpoint is gone
is kept when the run's metrics are those it was made for, and `--retrain-missing` trains a
run whose weights a check needs again, from its own overrides, seed and thread count
(seeded training on the CPU gives back the same tensors, so unfinished stages resume).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
import yaml
from hydra.utils import instantiate

from odelab.attacks.masking import (
    STAGES,
    curve_stage,
    grid_stage,
    independent_stage,
    solver_checks,
    square_stage,
)
from odelab.checkpoints import load_checkpoint
from odelab.hydra_setup import repo_root
from odelab.profiling import describe_device
from odelab.records.robust import CheckSettings, Retrained
from odelab.reports.base import relative_path
from odelab.reports.records import RecordError, load_record
from odelab.reports.robust_record import MODELS, load_check, stage_done
from odelab.runs import Run, load_run

RECIPES = {"GaussianNoise": "gaussian", "FGSM": "fgsm", "PGD": "pgd"}


def identify(run: Run) -> dict[str, str]:
    """Model, data set, recipe and seed of a run, from its config (the recipe from the
    `recipe=` override, else from the training perturbation's class)."""
    cfg = run.config
    perturbation = cfg.recipe.get("perturbation") if "recipe" in cfg else None
    derived = RECIPES.get(str(perturbation._target_).rsplit(".")[-1]) if perturbation else None
    return {
        "model": MODELS.get(str(cfg.task_name), str(cfg.task_name)),
        "experiment": str(cfg.task_name),
        "data": str(cfg.data.dataset),
        "recipe": run.override_map.get("recipe", derived or "clean"),
        "seed": str(cfg.seed),
    }


def record_name(ident: dict[str, str]) -> str:
    return f"checks_{ident['data']}_{ident['recipe']}_{ident['experiment']}_seed{ident['seed']}"


def load_net(run: Run, device: str = "cpu") -> torch.nn.Module:
    """The trained net of a run (the task's `net`), in eval mode on `device`."""
    return run.trained_task().net.eval().to(device)


def test_images(run: Run, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = instantiate(run.config.data)
    data.setup("test")
    images, labels = data.splits["test"].tensors
    # The data module's own conversion: [0, 1] floats in the models' layout.
    return data.on_after_batch_transfer((images[:n], labels[:n]), 0)


# What a record's finished stages depend on (the command-line part of its `CheckSettings`):
# a rerun with other values redoes them.
DIGESTS = ("weights", "cnn_weights", "metrics")
SETTINGS = tuple(f.name for f in fields(CheckSettings) if f.name not in DIGESTS)


def weights(run: Run) -> str:
    """SHA-256 of the trained tensors in the run's final checkpoint (names and bytes, not
    the file, which also holds paths and times): a record belongs to these weights wherever
    the run folder lies (`reproduce.py --from-parts` moves finished sweeps), and a run
    trained again to the very same weights keeps its finished stages."""
    state = load_checkpoint(run.checkpoint)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tensor.numel()};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def untimed(metrics: dict[str, object]) -> dict[str, object]:
    """A run's metrics without its timings (which no rerun reproduces)."""
    return {k: v for k, v in metrics.items() if "time" not in k}


def results(run: Run) -> str:
    """SHA-256 of the run's metrics (timings aside): what ties a record to the committed
    run when its weights are gone (checkpoints are not committed)."""
    metrics = untimed(json.loads((run.path / "metrics.json").read_text()))
    return hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest()


def same_settings(made: dict[str, object], wanted: dict[str, object], weights: bool) -> bool:
    """Whether a record was made with the wanted settings: by the weights' digests when
    they are here (`weights`), else by the metrics of the run they gave."""
    skip = ("metrics",) if weights else ("weights", "cnn_weights")
    return {k: v for k, v in made.items() if k not in skip} == {
        k: v for k, v in wanted.items() if k not in skip
    }


# In a run folder being trained again: what it held before (metrics, sweep record, device,
# overrides), so that a stop mid-way resumes and compares as if unbroken.
RETRAINING = "retraining.json"
# In a run folder trained again: how its new metrics compare with those it had (kept with
# the run's records, so that a check started by a later invocation still reports it).
RETRAINED = "retrained.json"


def retrain(folder: Path) -> dict[str, object]:
    """Train a finished run whose checkpoint is gone again, into the same folder, from its
    own overrides (seed included), and compare its new metrics with those it had.

    Training is seeded and, on one CPU, deterministic, so the weights and every test metric
    come back the same; where they do not, the new metrics stay (they belong to the weights
    the checks use) and the difference is returned. Timings are not compared.
    """
    folder = folder.resolve()
    marker = folder / RETRAINING
    if marker.is_file():  # an interrupted retraining: resumed from its last checkpoint
        before = json.loads(marker.read_text())
    else:
        job = folder / "job.json"
        before = {
            "metrics": json.loads((folder / "metrics.json").read_text()),
            # The sweep's record of the job (number, overrides, training time) stays as
            # it was: the training below is not a sweep job.
            "job": json.loads(job.read_text()) if job.is_file() else None,
            "device": json.loads((folder / "device.json").read_text())
            if (folder / "device.json").is_file()
            else {},
            "overrides": yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()),
        }
        shutil.rmtree(folder)  # its records are committed
        folder.mkdir(parents=True)
        write_atomic(marker, before)
    old = before["metrics"]
    # The thread count it was trained with (a CPU reduction's order may depend on it).
    threads = before["device"].get("torch_threads")
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    overrides = [
        o for o in before["overrides"] if not o.startswith(("resume=", "hydra.", "hydra/"))
    ]
    command = [sys.executable, str(repo_root() / "run.py"), *overrides]
    command += ["resume=true", f"hydra.run.dir={folder}"]
    print("retraining:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=repo_root(), env=env)
    new = json.loads((folder / "metrics.json").read_text())
    if before["job"] is not None:
        write_atomic(folder / "job.json", before["job"])
    outcome = compare_metrics(old, new)
    write_atomic(folder / RETRAINED, outcome)
    marker.unlink()
    return outcome


def compare_metrics(old: dict[str, float], new: dict[str, float]) -> dict[str, object]:
    """How a retrained run's metrics compare with those it had, timings aside."""
    old, new = untimed(old), untimed(new)
    keys = sorted(set(old) | set(new))
    differing = [k for k in keys if old.get(k) != new.get(k)]
    return {
        "metrics_compared": len(keys),
        "differing": {k: [old.get(k), new.get(k)] for k in differing},
        "summary": (
            f"all {len(keys)} metrics as before"
            if not differing
            else f"{len(differing)} of {len(keys)} metrics differ ({', '.join(differing[:3])})"
        ),
    }


def settings(run: Run, cnn: Run | None, args: argparse.Namespace) -> dict[str, object]:
    return {
        **{key: getattr(args, key) for key in SETTINGS},
        "weights": weights(run),
        "cnn_weights": weights(cnn) if cnn is not None else None,
        "metrics": results(run),
    }


def kept_without_weights(run: Run, args: argparse.Namespace, out: Path) -> bool:
    """A finished record of a run whose checkpoint is gone (its records were restored
    from the committed ones): kept when it was made with these settings for a run with
    these very metrics. Returns whether it was kept."""
    if run.checkpoint.is_file() or not out.is_file():
        return False
    try:
        record = json.loads(out.read_text())
        load_check(out, data=record)
    except (json.JSONDecodeError, RecordError):
        return False
    wanted = {**{key: getattr(args, key) for key in SETTINGS}, "metrics": results(run)}
    if not record.get("complete") or not same_settings(
        record.get("settings") or {}, wanted, weights=False
    ):
        return False
    if record.get("run") != relative_path(run.path):
        record["run"] = relative_path(run.path)
        save(out, record)
    return True


def write_atomic(path: Path, record: dict[str, object]) -> None:
    """Write the record whole or not at all (a stop mid-write leaves the old one)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def save(out: Path, record: dict[str, object]) -> None:
    """Write a check record after validating it against its one schema (`CheckRecord`)."""
    load_check(out, data=record)
    write_atomic(out, record)


def checks(
    run: Run,
    cnn: Run | None,
    args: argparse.Namespace,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, object]:
    """Every check for one run (see the module docstring), stage by stage into `out`."""
    ident = identify(run)
    wanted = settings(run, cnn, args)
    record: dict[str, object] = {}
    if out.is_file():
        try:  # a record not matching its schema (`CheckRecord`) is made again
            record = json.loads(out.read_text())
            load_check(out, data=record)
        except (json.JSONDecodeError, RecordError):
            record = {}
        if not same_settings(record.get("settings") or {}, wanted, weights=True):
            record = {}
    stages = [s for s in STAGES if s != "solvers" or ident["model"] != "CNN"]
    # Weights trained again because the checkpoint was gone: whether the metrics came back.
    again = getattr(args, "retrained", {}).get(run.path)
    current = {"run": relative_path(run.path), "settings": wanted}
    if again is not None:
        current["retrained"] = again
    if record.get("complete") and all(stage_done(record.get(stage)) for stage in stages):
        # The same weights, perhaps moved, or with metrics recorded since.
        if any(record.get(key) != value for key, value in current.items()):
            record.update(current)
            save(out, record)
        return record
    net = load_net(run, args.device)
    x, y = test_images(run, args.images)
    x, y = x.to(args.device), y.to(args.device)
    record.update(
        {
            **ident,
            **current,
            "images": len(y),
            "device": describe_device(torch.device(args.device)),
            "complete": False,
        }
    )
    for stage in stages:
        if stage_done(record.get(stage)):
            continue
        # Each stage seeds its own random starts, so a resumed record equals an unbroken one.
        torch.manual_seed(STAGES.index(stage))
        if stage == "grid":
            record.update(grid_stage(net, x, y, ident["data"], args.batch_size))
        elif stage == "curve":
            record["curve"] = curve_stage(net, x, y, record, args)
        elif stage == "square":
            record["square"] = square_stage(net, x, y, record, args)
        elif stage == "independent":
            record["independent"] = independent_stage(net, x, y, record, args)
        else:
            cnn_net = load_net(cnn, args.device) if cnn is not None else None
            n_sq = min(args.square_images, len(y))
            eps = float(record["curve"]["eps"])  # type: ignore[index]
            record["solvers"] = solver_checks(
                net, cnn_net, x[:n_sq], y[:n_sq], eps, args.batch_size, args.deploy_backend
            )
        record["complete"] = all(stage_done(record.get(done)) for done in stages)
        save(out, record)
        log(stage)
    return record


def check_one(run: Run, cnn: Run | None, args: argparse.Namespace, start: float) -> str:
    """Check one model into its record (a worker of `--jobs`)."""
    if args.jobs > 1:
        torch.set_num_threads(1)
    label = record_name(identify(run))

    def log(stage: str) -> None:
        print(f"[{time.perf_counter() - start:7.0f} s] {label}: {stage}", flush=True)

    checks(run, cnn, args, args.out / f"{label}.json", log)
    return label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, required=True, help="the budget's sweeps folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON records")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds to check")
    parser.add_argument("--images", type=int, default=200, help="test images for grid/solvers")
    parser.add_argument("--curve-images", type=int, default=100)
    parser.add_argument("--curve-steps", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--curve-restarts", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--square-images", type=int, default=200)
    parser.add_argument("--queries", type=int, default=1000, help="Square attack queries")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--deploy-backend",
        default="torchode",
        choices=["torchdiffeq", "torchode"],
        help="dopri5 deployment: torchode (each image its own step size and error, so a "
        "prediction does not depend on its batch) or torchdiffeq (one RMS error per batch)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="models checked at once")
    parser.add_argument(
        "--retrain-missing",
        action="store_true",
        help="train a finished run whose checkpoint is gone again, from its own config and "
        "seed, before checking it (its new metrics are compared with the old)",
    )
    args = parser.parse_args(argv)
    seeds = set(args.seeds.split(","))
    args.runs = args.runs.resolve()
    # Retrainings a stop interrupted resume first (they hold no metrics.json yet).
    retrained = {
        p.parent: retrain(p.parent)
        for p in sorted(args.runs.glob(f"*/*/{RETRAINING}"))
        if not (p.parent / "metrics.json").is_file()
    }
    runs = [load_run(p.parent) for p in sorted(args.runs.glob("*/*/metrics.json"))]
    runs = [r for r in runs if r.ok and r.config is not None and r.config.task_name in MODELS]
    by_key = {tuple(identify(r).values()): r for r in runs}
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    todo, kept = [], {}
    for run in runs:
        ident = identify(run)
        if ident["seed"] not in seeds:
            continue
        cnn = by_key.get(("CNN", "robust_cnn", ident["data"], ident["recipe"], ident["seed"]))
        if cnn is None and ident["model"] != "CNN":
            print(
                f"{record_name(ident)}: no CNN run of the same data, recipe and seed to "
                "transfer from; its solver checks leave the transfer out",
                flush=True,
            )
        if kept_without_weights(run, args, args.out / f"{record_name(ident)}.json"):
            print(f"{record_name(ident)}: finished record kept (weights not here)", flush=True)
            kept[run.path] = (run, cnn if cnn is not run else None)
            continue
        todo.append((run, cnn if cnn is not run else None))
    missing = list(
        dict.fromkeys(
            r.path for pair in todo for r in pair if r is not None and not r.checkpoint.is_file()
        )
    )
    if missing and not args.retrain_missing:
        print(
            f"error: {relative_path(missing[0])} finished but its checkpoint is not here "
            "(checkpoints are not committed), and the checks need its weights: add "
            "--retrain-missing to train it again from its own config and seed",
            file=sys.stderr,
        )
        return 2
    if len(missing) > 1 and args.jobs > 1:
        from joblib import Parallel, delayed

        done = Parallel(n_jobs=args.jobs, prefer="threads")(delayed(retrain)(p) for p in missing)
    else:
        done = [retrain(path) for path in missing]
    retrained.update(zip(missing, done, strict=True))
    # A kept record's run trained again now (as another model's transfer source) whose
    # metrics did not come back: its record no longer describes its weights.
    for path, (run, cnn) in kept.items():
        if retrained.get(path, {}).get("differing"):
            (args.out / f"{record_name(identify(run))}.json").unlink()
            todo.append((run, cnn))
    # Retrained by an earlier invocation (or restored with the committed records).
    for path in sorted(args.runs.glob(f"*/*/{RETRAINED}")):
        data = json.loads(path.read_text())
        load_record(path, Retrained, data=data)  # validated, kept as the record's dict
        retrained.setdefault(path.parent, data)
    args.retrained = retrained
    todo = [
        (load_run(run.path), load_run(cnn.path) if cnn is not None else None) for run, cnn in todo
    ]
    for path, same in retrained.items():
        print(f"{relative_path(path)}: retrained; {same['summary']}", flush=True)
    if args.jobs > 1:
        from joblib import Parallel, delayed

        Parallel(n_jobs=args.jobs)(delayed(check_one)(r, c, args, start) for r, c in todo)
    else:
        for run, cnn in todo:
            check_one(run, cnn, args, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
