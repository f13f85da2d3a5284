"""Report on the speed of the ODE core: the adjoint seminorm (Kidger et al. 2021) on the ODE-Net
and the CNF, and `experiments/bench_speed.py`'s record (host reads, framework overhead,
per-sample step control as in torchode, compiled fields, GPU training steps).

The seminorm runs become one pandas frame (`runs_frame`), their task the tag of their sweep in
`conf/reproduce/speed.yaml`. The speed claims of `conf/claims/checks.yaml` (those whose
`report` is `speed`) are judged from the frame and the benchmark record into `claims.json`
beside the report; the thresholds (the overhead target, the GPU speed-ups) are those claims'
data, not constants here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import odelab.reports.claims as cl
from odelab.reports.base import (
    JobResult,
    Jobs,
    Reproduction,
    conf_tags,
    relative_path,
)
from odelab.reports.frame import runs_frame, seed_values
from odelab.reports.records import load_record
from odelab.reports.render import render

TAGS = conf_tags("speed")
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
# Host-read columns, in this order where any case has them.
LIBRARIES = ("odelab", "torchdiffeq", "torchode", "lightning", "torchmetrics", "torch")
LIBRARIES += ("torch.optim", "other")


@dataclass
class SpeedBench:
    """`bench/bench_speed.json` (experiments/bench_speed.py); each part is present unless it
    was skipped (`--skip <part>`)."""

    device: dict = field(default_factory=dict)
    threads: int | None = None
    settings: str = ""
    cuda: bool = False
    load_average: list[float] | None = None
    host_reads: dict | None = None
    overhead: dict | None = None
    per_sample: dict | None = None
    compile: dict | None = None
    gpu: dict | None = None
    wall_s: float | None = None


def _epoch_mean(job: JobResult, key: str) -> float | None:
    """Mean over the run's epochs of a per-epoch mean (`<key>_epoch`); equal-sized epochs."""
    values = job.run.epoch_series(key)[1]
    return statistics.fmean(values) if values else job.metrics.get(key)


def seminorm_frame(jobs: Jobs, budget: str) -> pd.DataFrame:
    """One row per seminorm run: `tag` (task), `norm`, per-step NFE and seconds (epoch means),
    the scaled validation `quality`, the run folder."""
    frame = runs_frame(jobs, tags=TAGS.get(budget) or None)
    if frame.empty or "tag" not in frame:
        return frame.assign(tag=[], norm=[], seed=[])
    semi = frame["sensitivity.seminorm"].astype(str).str.lower() == "true"
    frame["norm"] = semi.map({True: "seminorm", False: "full"})
    for column, key in (("backward", "nfe_backward"), ("forward", "nfe_forward")):
        frame[column] = [_epoch_mean(j, f"train/{key}_epoch") for j in jobs]
    frame["time"] = [_epoch_mean(j, "train/step_time_epoch") for j in jobs]
    frame["quality"] = [
        TASKS[t][3] * row.get(TASKS[t][1], float("nan")) if t in TASKS else float("nan")
        for t, (_, row) in zip(frame["tag"], frame.iterrows(), strict=True)
    ]
    frame["path"] = [relative_path(j.output_dir) for j in jobs]
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


def _ratios(ms: dict[str, Any], side: str, base_side: str, clock: str = "seconds") -> list[float]:
    """Per repeat: `side`'s time per step over `base_side`'s."""
    return [a / b for a, b in zip(ms[side][clock], ms[base_side][clock], strict=True)]


def overhead_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Per clock: median ms per step of each side and the ratios (median, spread per repeat)."""
    ms = record["ms_per_step"]
    sides = [s for s in ("plain", "lightning", "odelab") if s in ms]
    pairs = [(a, b) for a, b in (("lightning", "plain"), ("odelab", "plain")) if a in ms]
    pairs += [("odelab", "lightning")] if "lightning" in ms else []
    rows = []
    for clock in ("seconds", "cpu_seconds"):
        per = {f"{a}/{b}": _ratios(ms, a, b, clock) for a, b in pairs}
        medians = {s: statistics.median(ms[s][clock]) for s in sides}
        rows.append(
            {
                "clock": "wall" if clock == "seconds" else "process CPU",
                "ms": medians,
                "ratio": {
                    k: (medians[k.split("/")[0]] / medians[k.split("/")[1]], min(v), max(v))
                    for k, v in per.items()
                },
            }
        )
    return rows


def gpu_summary(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: each variant's finished runs (n, ms, NFE, accuracy in %, first-steps seconds,
    per-seed speed-ups over eager, errors) and the fast path with the highest median speed-up
    (the eager and the plain torchdiffeq step are not fast paths)."""
    out = {}
    for model, entry in record["models"].items():
        eager = {r["seed"]: r["median_ms"] for r in entry["variants"].get("eager", [])}
        variants, best = {}, None
        for name, runs in entry["variants"].items():
            done = [r for r in runs if "error" not in r]
            errors = sorted({r["error"] for r in runs if "error" in r})
            fell_back = sum(bool(r.get("capture_failed")) for r in done)
            if fell_back:  # the loop ran uncaptured: say so beside its time
                errors.append(f"capture failed in {fell_back}, ran uncaptured")
            ups = [eager[r["seed"]] / r["median_ms"] for r in done if r["seed"] in eager]
            keys = ["median_ms", "nfe_forward", "nfe_backward", "accuracy", "warmup_s"]
            col = pd.DataFrame(done, columns=keys).astype(float)
            col["accuracy"] *= 100
            variants[name] = {
                "n": len(done),
                "errors": errors,
                "speedups": ups,
                "cells": {c: (col[c].mean(), col[c].std()) for c in col},
            }
            fast = name not in ("eager", "plain torchdiffeq") and ups
            if fast and (best is None or statistics.median(ups) > statistics.median(best[1])):
                best = (name, ups)
        out[model] = {"variants": variants, "best": best}
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


def _measures(frame: pd.DataFrame, bench: SpeedBench) -> dict[str, Callable[[], tuple]]:
    """Claim id -> the values it is judged on: (a,) for a value or bound, (a, b) a contrast."""
    vdp = (bench.per_sample or {}).get("van_der_pol", {})
    ms = (bench.overhead or {}).get("ms_per_step", {})
    gpu = gpu_summary(bench.gpu) if bench.gpu else {}

    def best(model: str) -> tuple:
        found = gpu.get(model, {}).get("best")
        return (found[1] if found else [],)

    return {
        "seminorm_backward_saving": lambda: (_saving(frame, "seminorm_cnf"),),
        "seminorm_saving_odenet": lambda: (_saving(frame, "seminorm_odenet"),),
        "seminorm_same_quality": lambda: _paired(frame, "seminorm_cnf", "quality"),
        "seminorm_same_accuracy_odenet": lambda: _paired(frame, "seminorm_odenet", "quality"),
        "seminorm_faster_cnf": lambda: _paired(frame, "seminorm_cnf", "time"),
        "torchode_faster_than_joint": lambda: (
            [
                j / p
                for j, p in zip(
                    vdp["joint (torchdiffeq)"]["cpu_s"],
                    vdp["per-sample (torchode)"]["cpu_s"],
                    strict=True,
                )
            ]
            if vdp
            else [],
        ),
        "framework_overhead": lambda: (_ratios(ms, "odelab", "plain") if ms else [],),
        "framework_overhead_over_lightning": lambda: (
            _ratios(ms, "odelab", "lightning") if "lightning" in ms else [],
        ),
        "capture_rknet_speedup": lambda: best("RK-Net (rk4, direct)"),
        "fast_odenet_speedup": lambda: best("ODE-Net (dopri5, adjoint)"),
    }


def verdicts(frame: pd.DataFrame, bench: SpeedBench, budget: str) -> list[cl.Verdict]:
    """Every speed claim judged on `budget`, or not testable with why."""
    measures = _measures(frame, bench)
    out = []
    for claim in CLAIMS.values():
        if budget not in claim.budgets or claim.id not in measures:
            testing = ", ".join(f"`{b}`" for b in claim.budgets) or "none"
            out.append(cl.not_testable(claim, claim.reason or f"budgets testing it: {testing}"))
            continue
        values = [list(v) for v in measures[claim.id]()]
        out.append(cl.evaluate(claim, *values))
    return out


def _config(jobs: Jobs, frame: pd.DataFrame, tag: str) -> Any:
    """The resolved config of the first finished run of `tag`, or None."""
    rows = frame[frame["ok"] & (frame["tag"] == tag)] if len(frame) else frame
    return jobs[rows.index[0]].run.config if len(rows) else None


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts and what differs, then the seminorm table and each benchmark part."""
    frame = seminorm_frame(jobs, budget)
    raw = getattr(jobs, "bench", {}).get("bench_speed")
    where = report_dir / "records" / "bench" / "bench_speed.json"
    bench = load_record(where, SpeedBench, data=raw) if raw is not None else SpeedBench()
    judged = verdicts(frame, bench, budget)
    cl.write_claims(report_dir / "claims.json", judged)
    done = frame[frame["ok"]] if len(frame) else frame
    table = (
        done.groupby(["tag", "norm"], sort=False)[["backward", "forward", "time", "quality"]]
        .agg(["mean", "std", "count"])
        .reset_index()
        if len(done)
        else pd.DataFrame()
    )
    return render(
        "speed.md.j2",
        budget=budget,
        headline=[v for v in judged if v.verdict != "not testable here"],
        untested=[v for v in judged if v.verdict == "not testable here"],
        verdict={v.claim: v for v in judged},
        about=CLAIMS,
        labels={c.id: c.text for c in CLAIMS.values()},
        paper=cl.paper_settings(PAPER, "speed"),
        tasks=TASKS,
        cfg={tag: _config(jobs, frame, tag) for tag in TASKS},
        seminorm=table.to_dict("records") if len(table) else [],
        bench=bench,
        libraries=[
            lib
            for lib in LIBRARIES
            if bench.host_reads
            and any(lib in c["by_library"] for c in bench.host_reads["cases"].values())
        ],
        overhead=overhead_rows(bench.overhead) if bench.overhead else [],
        compiled=compile_rows(bench.compile) if bench.compile else [],
        median=statistics.median,
        gpu=gpu_summary(bench.gpu) if bench.gpu else {},
        device="; ".join(done["device"].unique()) if len(done) else "n/a",
        runs=[(r["tag"], r["seed"], r["norm"], r["path"]) for _, r in done.iterrows()],
        failed=[relative_path(j.output_dir) for j in jobs if not j.ok],
    )


TITLE = "Speed of the ODE core: fast paths, overhead, seminorm, per-sample step control"
SPEED = Reproduction.from_conf("speed", TITLE, build_report)
