"""Soak: many short runs in one process, as a sweep runs its jobs; memory and handles must not grow.

Hydra's basic launcher runs every job of a multirun in the same Python process,
one after the other. This benchmark does the same for `--minutes` (default 30):
it cycles through tiny versions of the four task families (spiral dynamics,
CNF, MNIST ODE-Net, robust ODENet), each a full `odelab.train.run` with the CSV
logger and the default callbacks (checkpoints, figures), a new seed every run.
After each run it records the resident memory (VmRSS), the open file
descriptors and the threads of the process, and whether the run failed.

The trend is the least-squares slope over runs (scipy.stats.linregress), after
a warm-up of `--warmup` runs in which allocators and caches fill; the verdict
is "no growth" when the slope's 95 % interval holds 0, "under 1 %" when the fitted growth
over the whole soak stays under 1 % of the resident memory (file handles:
under one handle).

    python experiments/soak.py                       # 30 minutes -> experiments/reports/soak/
    python experiments/soak.py --minutes 1 --out /tmp/soak
    python experiments/soak.py --report-only         # re-render soak.md from soak.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "reports" / "soak"

# The offline MNIST split cut to a few batches, for the image tasks.
SMALL_IMAGES = [
    "data.train_subset=128",
    "data.batch_size=32",
    "data.val_size=64",
    "data.test_size=64",
    "data.eval_batch_size=64",
    "model.net.channels=8",
]
# One epoch of a few batches each: seconds per run on a CPU.
TASKS: dict[str, list[str]] = {
    "spiral": [
        "experiment=spiral",
        "data.n_points=100",
        "data.extrapolate_to=26",
        "data.batches_per_epoch=5",
    ],
    "cnf": [
        "experiment=cnf_toy",
        "data.batch_size=64",
        "data.batches_per_epoch=5",
        "data.n_val=128",
        "data.n_test=128",
        "data.eval_batch_size=128",
        "model.flow.field.hidden=16",
        "model.grid_size=12",
        "model.n_plot_samples=64",
        "model.n_frames=2",
    ],
    "mnist": ["experiment=mnist_odenet", *SMALL_IMAGES],
    "robust": [
        "experiment=robust_odenet",
        *SMALL_IMAGES,
        "attack=fgsm",
        "attack.strengths=[0.1]",
    ],
}
# odelab.harness adds logger=csv and turns progress bars and model summaries off.
COMMON = ["trainer.max_epochs=1", "trainer.log_every_n_steps=1"]


def process_stats() -> dict[str, float]:
    """Resident memory (MiB), open file descriptors and threads of this process (Linux /proc)."""
    status = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "open_files": len(os.listdir("/proc/self/fd")),
        "threads": int(fields["Threads"]),
    }


def soak(minutes: float, scratch: Path) -> list[dict[str, Any]]:
    import logging

    from odelab.harness import launch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    runs: list[dict[str, Any]] = []
    names = list(TASKS)
    deadline = time.monotonic() + 60 * minutes
    while time.monotonic() < deadline:
        i = len(runs)
        task = names[i % len(names)]
        out = scratch / f"run{i}"
        start = time.perf_counter()
        status, error = "completed", None
        try:
            launch([*TASKS[task], *COMMON, f"seed={i}"], out, log_dir=scratch / "logs")
        except Exception as err:  # noqa: BLE001 - a failed run is a result of the soak
            status = "failed"
            error = "".join(traceback.format_exception_only(err)).strip().splitlines()[-1]
        seconds = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        gc.collect()
        runs.append(
            {
                "run": i,
                "task": task,
                "status": status,
                "error": error,
                "seconds": round(seconds, 2),
                **process_stats(),
            }
        )
        last = runs[-1]
        print(
            f"run {i:4d} {task:<7} {status:<9} {seconds:6.1f} s  rss {last['rss_mb']:8.1f} MiB  "
            f"fds {last['open_files']:3d}  threads {last['threads']:3d}",
            flush=True,
        )
    return runs


def trend(values: list[float]) -> dict[str, float]:
    """Least-squares slope per run with its 95 % interval (scipy.stats.linregress)."""
    from scipy import stats

    n = len(values)
    ends = {"first": float(values[0]), "last": float(values[-1])} if values else {}
    if n < 3:
        nan = float("nan")
        return {"n": n, "slope": nan, "low": nan, "high": nan, **ends}
    if min(values) == max(values):  # constant: linregress has no spread to estimate
        return {"n": n, "slope": 0.0, "low": 0.0, "high": 0.0, **ends}
    fit = stats.linregress(range(n), values)
    half = stats.t.ppf(0.975, n - 2) * fit.stderr
    return {
        "n": n,
        "slope": float(fit.slope),
        "low": float(fit.slope - half),
        "high": float(fit.slope + half),
        **ends,
    }


def verdict(fit: dict[str, float], allowed_growth: float) -> str:
    """ "no growth": the interval holds 0; "under 1 %": growth below `allowed_growth`."""
    if fit["n"] < 3:
        return "too few runs"
    growth = fit["slope"] * (fit["n"] - 1)
    if fit["low"] <= 0 <= fit["high"]:
        return "no growth"
    if growth < allowed_growth:
        return "grows, under 1 % over these runs"
    return "grows"


def summarize(runs: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    steady = runs[warmup:] if len(runs) > warmup + 2 else runs
    rss = [r["rss_mb"] for r in steady]
    fds = [float(r["open_files"]) for r in steady]
    rss_fit, fd_fit = trend(rss), trend(fds)
    late_fit = trend(rss[len(rss) // 2 :])
    failures = [r for r in runs if r["status"] != "completed"]
    return {
        "runs": len(runs),
        "failed": len(failures),
        "warmup": len(runs) - len(steady),
        "rss": {**rss_fit, "verdict": verdict(rss_fit, 0.01 * (rss[0] if rss else 0.0))},
        # A curve that levels off (allocator caches filling) and a leak differ here.
        "rss_late": {**late_fit, "verdict": verdict(late_fit, 0.01 * (rss[0] if rss else 0.0))},
        "open_files": {**fd_fit, "verdict": verdict(fd_fit, 1.0)},
        "failures": [{"run": r["run"], "task": r["task"], "error": r["error"]} for r in failures],
    }


def render(data: dict[str, Any]) -> str:
    """soak.md from soak.json: every number comes from the JSON, nothing from the clock."""
    meta = data["meta"]
    s = summarize(data["runs"], meta.get("warmup", 8))  # recomputed: the runs are the record
    per_task: dict[str, list[float]] = {}
    for r in data["runs"]:
        per_task.setdefault(r["task"], []).append(r["seconds"])

    def fit_row(name: str, unit: str, fit: dict[str, Any]) -> str:
        growth = fit["slope"] * (fit["n"] - 1)
        return (
            f"| {name} | {fit['first']:.1f} | {fit['last']:.1f} | {fit['slope']:+.4f} | "
            f"[{fit['low']:+.4f}, {fit['high']:+.4f}] | {growth:+.2f} {unit} "
            f"| {fit['verdict']} |"
        )

    lines = [
        "# Soak: short runs in one process",
        "",
        f"{s['runs']} runs in {meta['minutes']:g} minutes in one Python process, as the jobs of a "
        "sweep run under Hydra's basic launcher: tiny spiral, CNF, MNIST ODE-Net and robust "
        "ODENet runs in turn (one epoch each, CSV logger, default callbacks, a new seed per run), "
        f"on {meta['machine']} (torch {meta['torch']}, Python {meta['python']}). Command: "
        f"`{meta['command']}`.",
        "",
        f"**Failed runs: {s['failed']}.**",
        "",
        f"Trend over runs {s['warmup']}-{s['runs'] - 1} (the first {s['warmup']} are warm-up), "
        "least-squares slope per run with its 95 % interval (scipy.stats.linregress):",
        "",
        "| quantity | first | last | slope per run | 95 % interval | fitted growth over its runs "
        "| verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
        fit_row("resident memory (MiB)", "MiB", s["rss"]),
        fit_row("resident memory, second half of the runs (MiB)", "MiB", s["rss_late"]),
        fit_row("open file descriptors", "", s["open_files"]),
        "",
        'Verdict: "no growth" when the interval holds 0; "under 1 %" when the fitted growth '
        "over the row's runs is below 1 % of the resident memory (file descriptors: below one "
        "descriptor).",
        "",
        "| task | runs | mean seconds per run |",
        "|---|---:|---:|",
    ]
    for task, secs in per_task.items():
        lines.append(f"| {task} | {len(secs)} | {sum(secs) / len(secs):.1f} |")
    if s["failures"]:
        lines += ["", "| run | task | error |", "|---:|---|---|"]
        lines += [f"| {f['run']} | {f['task']} | {f['error']} |" for f in s["failures"]]
    lines += ["", "Per-run numbers: `soak.json` beside this file.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=int, default=8, help="runs left out of the trend")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for soak.json and soak.md")
    parser.add_argument(
        "--report-only", action="store_true", help="re-render soak.md from soak.json"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "soak.json", args.out / "soak.md"
    if not args.report_only:
        import torch

        with tempfile.TemporaryDirectory(prefix="odelab-soak-") as scratch:
            runs = soak(args.minutes, Path(scratch))
        data = {
            "meta": {
                "minutes": args.minutes,
                "warmup": args.warmup,
                "command": f"python experiments/soak.py --minutes {args.minutes:g} "
                f"--warmup {args.warmup}",
                "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "summary": summarize(runs, args.warmup),
            "runs": runs,
        }
        json_path.write_text(json.dumps(data, indent=1) + "\n")
    data = json.loads(json_path.read_text())
    md_path.write_text(render(data))
    s = summarize(data["runs"], data["meta"].get("warmup", args.warmup))
    print(
        f"{s['runs']} runs, {s['failed']} failed; resident memory slope "
        f"{s['rss']['slope']:+.4f} MiB/run [{s['rss']['low']:+.4f}, {s['rss']['high']:+.4f}] "
        f"({s['rss']['verdict']}); open files slope {s['open_files']['slope']:+.4f}/run "
        f"({s['open_files']['verdict']}) -> {md_path}"
    )


if __name__ == "__main__":
    main()
