"""Report on the speed of the ODE core: the adjoint seminorm (Kidger et al. 2021) on the ODE-Net
and the CNF, and `experiments/bench_speed.py`'s record (host reads, framework overhead,
per-sample step control as in torchode, compiled fields, GPU training steps).

The seminorm runs become one pandas frame, their task the tag of their sweep in
`conf/reproduce/speed.yaml`. The speed claims of `conf/claims/checks.yaml` are judged from it and
the benchmark record into `claims.json`; their thresholds are those claims' data.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pandas as pd

import odelab.reports.claims as cl
import odelab.reports.parts as parts
from odelab.records.speed import SpeedBench
from odelab.reports.base import Jobs, Reproduction
from odelab.reports.frame import seed_values
from odelab.reports.render import render

PAPER = "checks"
CLAIMS = {c.id: c for c in cl.load_claims(PAPER).values() if c.report == "speed"}
# The most odelab's step may cost against the hand-written loop; the spiral report reads it.
OVERHEAD_TARGET = CLAIMS["framework_overhead"].threshold
# Seminorm task by sweep tag: (label, quality metric, its label, scale for display).
# Quality is judged on validation metrics: test metrics are for final tables only.
TASKS = {
    "seminorm_odenet": ("ODE-Net MNIST", "metric.val/acc", "validation accuracy (%)", 100.0),
    "seminorm_cnf": ("CNF 8gaussians", "metric.val/nll", "validation NLL (nats)", 1.0),
}
EPOCHS = {"backward": "nfe_backward", "forward": "nfe_forward", "time": "step_time"}
# Host-read columns, in this order where any case has them.
LIBRARIES = ("odelab", "torchdiffeq", "torchode", "lightning", "torchmetrics", "torch")
LIBRARIES += ("torch.optim", "other")
SIDES = ("plain", "lightning", "odelab")  # of the overhead timing; pairs as ratios a / b:
PAIRS = (("lightning", "plain"), ("odelab", "plain"), ("odelab", "lightning"))
GPU_CELLS = ["median_ms", "nfe_forward", "nfe_backward", "accuracy", "warmup_s"]


def seminorm_frame(jobs: Jobs, budget: str) -> pd.DataFrame:
    """One row per seminorm run: `tag` (task), `norm`, per-step NFE and seconds (means over the
    run's epochs), the scaled validation `quality`, the run folder."""
    epochs = {column: f"train/{key}_epoch" for column, key in EPOCHS.items()}
    frame = parts.report_frame(jobs, "speed", budget, epochs)
    if frame.empty or "tag" not in frame:
        return frame.assign(tag=[], norm=[], seed=[], quality=[])
    semi = frame["sensitivity.seminorm"].astype(str).str.lower() == "true"
    frame["norm"] = semi.map({True: "seminorm", False: "full"})
    frame["quality"] = float("nan")
    for tag, (_, column, _, scale) in TASKS.items():
        if column in frame:
            frame.loc[frame["tag"] == tag, "quality"] = scale * frame[column]
    return frame


def _paired(frame: pd.DataFrame, tag: str, column: str) -> tuple[pd.Series, pd.Series]:
    """(seminorm, full) values of `column` on the seeds both norms ran, in seed order."""
    rows = frame[frame["tag"] == tag]
    a, b = (seed_values(rows, column, norm=n) for n in ("seminorm", "full"))
    return a.align(b, join="inner")


def _saving(frame: pd.DataFrame, tag: str) -> list[float]:
    """Per seed: the seminorm's saving of backward NFE per step, in %."""
    semi, full = _paired(frame, tag, "backward")
    return list(100 * (1 - semi / full))


def step_ratios(ms: dict[str, Any], clock: str = "seconds") -> tuple[pd.DataFrame, dict]:
    """The time per step of each side (a column) per repeat (a row), and per pair `a/b` of sides
    the ratio of their medians with the lowest and highest ratio per repeat."""
    times = pd.DataFrame({side: ms[side][clock] for side in SIDES if side in ms})
    ratios = {}
    for a, b in (p for p in PAIRS if set(p) <= set(times)):
        per = times[a] / times[b]
        ratios[f"{a}/{b}"] = (times[a].median() / times[b].median(), per.min(), per.max())
    return times, ratios


def overhead_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Per clock: median ms per step of each side and the ratios (median, spread per repeat)."""
    rows = []
    for clock, name in (("seconds", "wall"), ("cpu_seconds", "process CPU")):
        times, ratios = step_ratios(record["ms_per_step"], clock)
        rows.append({"clock": name, "ms": times.median().to_dict(), "ratio": ratios})
    return rows


def gpu_summary(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: each variant's finished runs (n, ms, NFE, accuracy in %, first-steps seconds,
    per-seed speed-ups over eager, errors) and the fast path with the highest median speed-up
    (the eager and the plain torchdiffeq step are not fast paths)."""
    out = {}
    for model, entry in record["models"].items():
        eager = {r["seed"]: r["median_ms"] for r in entry["variants"].get("eager", [])}
        variants = {}
        for name, runs in entry["variants"].items():
            done = [r for r in runs if "error" not in r]
            errors = sorted({r["error"] for r in runs if "error" in r})
            if fell_back := sum(bool(r.get("capture_failed")) for r in done):
                errors.append(f"capture failed in {fell_back}, ran uncaptured")
            cells = pd.DataFrame(done, columns=GPU_CELLS).astype(float)
            cells["accuracy"] *= 100
            variants[name] = {
                "n": len(done),
                "errors": errors,
                "speedups": [eager[r["seed"]] / r["median_ms"] for r in done if r["seed"] in eager],
                "cells": {c: (cells[c].mean(), cells[c].std()) for c in cells},
            }
        fast = {n: v["speedups"] for n, v in variants.items() if v["speedups"]}
        fast = {n: ups for n, ups in fast.items() if n not in ("eager", "plain torchdiffeq")}
        best = max(fast, key=lambda n: statistics.median(fast[n]), default=None)
        out[model] = {"variants": variants, "best": (best, fast[best]) if best else None}
    return out


def compile_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per step and variant: first-call seconds, ms per step, CPU time vs eager."""
    rows = []
    for case, variants in record.items():
        eager = variants.get("eager", {}).get("median_cpu_s", float("nan"))
        for name, r in variants.items():
            ratio = r["median_cpu_s"] / eager if "median_cpu_s" in r else None
            rows.append({"case": case, "variant": name, "ratio": ratio, **r})
    return rows


def verdicts(frame: pd.DataFrame, bench: Any, budget: str) -> list[cl.Verdict]:
    """Every speed claim judged on `budget`, or not testable with why."""
    vdp = (bench.per_sample or {}).get("van_der_pol", {})
    gpu = gpu_summary(bench.gpu) if bench.gpu else {}
    # Per repeat, each side of the overhead timing and each control of the Van der Pol solves.
    times = dict(step_ratios(bench.overhead["ms_per_step"])[0].items()) if bench.overhead else {}
    times |= {k: pd.Series(e["cpu_s"]) for k, e in vdp.items() if isinstance(e, dict)}

    def ratio(a: str, b: str) -> tuple:
        return (list(times[a] / times[b]) if a in times and b in times else [],)

    def best(model: str) -> tuple:
        return ((gpu.get(model, {}).get("best") or (None, []))[1],)

    measures = {
        "seminorm_backward_saving": lambda: (_saving(frame, "seminorm_cnf"),),
        "seminorm_saving_odenet": lambda: (_saving(frame, "seminorm_odenet"),),
        "seminorm_same_quality": lambda: _paired(frame, "seminorm_cnf", "quality"),
        "seminorm_same_accuracy_odenet": lambda: _paired(frame, "seminorm_odenet", "quality"),
        "seminorm_faster_cnf": lambda: _paired(frame, "seminorm_cnf", "time"),
        "torchode_faster_than_joint": lambda: ratio("joint (torchdiffeq)", "per-sample (torchode)"),
        "framework_overhead": lambda: ratio("odelab", "plain"),
        "framework_overhead_over_lightning": lambda: ratio("odelab", "lightning"),
        "capture_rknet_speedup": lambda: best("RK-Net (rk4, direct)"),
        "fast_odenet_speedup": lambda: best("ODE-Net (dopri5, adjoint)"),
    }
    return parts.judge(CLAIMS.values(), budget, lambda c: measures.get(c.id, lambda: None)())


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts and what differs, then the seminorm table and each benchmark part."""
    frame = seminorm_frame(jobs, budget)
    bench = parts.bench_record(jobs, "bench_speed", SpeedBench) or SpeedBench()
    judged = verdicts(frame, bench, budget)
    cl.write_claims(report_dir / "claims.json", judged)
    done = frame[frame["ok"].astype(bool)]
    table = done.groupby(["tag", "norm"], sort=False)[[*EPOCHS, "quality"]].agg(
        ["mean", "std", "count"]
    )
    reads = (bench.host_reads or {}).get("cases", {}).values()
    return render(
        "speed.md.j2",
        budget=budget,
        judged=judged,
        about=CLAIMS,
        labels={c.id: c.text for c in CLAIMS.values()},
        paper=cl.paper_settings(PAPER, "speed"),
        tasks=TASKS,
        # The resolved config of each task's first finished run.
        cfg={
            t: next((jobs[i].run.config for i in done.index[done["tag"] == t]), None) for t in TASKS
        },
        seminorm=table.reset_index().to_dict("records"),
        bench=bench,
        libraries=[lib for lib in LIBRARIES if any(lib in c["by_library"] for c in reads)],
        overhead=overhead_rows(bench.overhead) if bench.overhead else [],
        compiled=compile_rows(bench.compile) if bench.compile else [],
        median=statistics.median,
        gpu=gpu_summary(bench.gpu) if bench.gpu else {},
        device="; ".join(done["device"].unique()) if len(done) else "n/a",
        runs=frame.to_dict("records"),
    )


TITLE = "Speed of the ODE core: fast paths, overhead, seminorm, per-sample step control"
SPEED = Reproduction.from_conf("speed", TITLE, build_report)
