"""Table 1 and Figure 3 of Chen et al. 2018 on MNIST (or Fashion-MNIST) with the memory and
tolerance studies: pandas frames of the runs (per run, per run and epoch) and of the benchmark
records, the claims of report `mnist` judged on them, `templates/mnist.md.j2` presenting."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

import odelab.reports.claims as cl
import odelab.reports.mnist_table as mt
from odelab.records.mnist import MemoryRecord, ToleranceRecord
from odelab.reports.base import Jobs, Reproduction, conf_tags, relative_path
from odelab.reports.frame import runs_frame, seed_values
from odelab.reports.records import load_record
from odelab.reports.render import render
from odelab.reports.stats import resolvable
from odelab.runs import Run, median

TAGS = conf_tags("mnist")
ARMS = {"ODE-Net": "odenet", "ResNet": "resnet", "RK-Net": "rknet", "1-layer MLP": "mlp"}
COLUMNS = {"test error": "error_pct", "parameters": "params_m"}  # else the NFE ratio
PAPERS = ("chen2018", "checks")  # checks.yaml: the later literature (NFE counting)
NFE = {"train/nfe_forward_epoch": "forward", "train/nfe_backward_epoch": "backward"}
SCHEMAS = {"mnist_memory": MemoryRecord, "mnist_tolerance": ToleranceRecord}  # bench/*.json


def _in_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in Table 1's model order (stable: seeds keep the jobs' order)."""
    return frame.sort_values("model", key=lambda s: s.map(mt.ORDER.index), kind="stable")


def _quarters(values: list[float]) -> list[float]:
    """Means of the four consecutive quarters of a series (fewer parts when it is short)."""
    bounds = np.round(np.linspace(0, len(values), min(4, len(values)) + 1)).astype(int)
    return [float(np.mean(p)) for p in np.split(np.array(values), bounds[1:-1])] if values else []


def _run_columns(run: Run) -> dict[str, Any]:
    """Per-run values the frame does not hold: the model, series summaries, data and schedule."""
    forward, backward = (run.series(f"train/nfe_{d}")[1] for d in ("forward", "backward"))
    quarters, (dataset, n_train, n_test) = _quarters(forward), mt.data_sizes(run)
    scheduler, hydra = run.config.model.get("scheduler"), run.path / ".hydra" / "hydra.yaml"
    launcher = OmegaConf.load(hydra).hydra.launcher.get("_target_", "") if hydra.is_file() else ""
    images = int(run.config.data.get("val_size") or 0) or None
    threads = run.device.get("torch_threads", "?")
    return {
        "model": mt.model_label(run),
        "step_time": median(run.series("train/step_time")[1]),
        "nfe_fwd": np.mean(forward) if forward else math.nan,
        "nfe_bwd": np.mean(backward) if backward else math.nan,
        "nfe_ratio": sum(backward) / sum(forward) if backward and sum(forward) else math.nan,
        "nfe_first": quarters[0] if len(quarters) == 4 else math.nan,
        "nfe_last": quarters[-1] if len(quarters) == 4 else math.nan,
        "quarters": quarters,
        "plateau": mt.plateau_state(*run.epoch_series("val/error"), images)[1],
        "solver": OmegaConf.to_container(run.config.solver, resolve=True),
        "sensitivity": run.config.sensitivity.method,
        "data_size": f"{dataset}, {n_train} train / {n_test} test",
        "epochs": run.epochs,
        "steps": run.train_steps,
        "batch": int(run.config.data.batch_size),
        "milestones": ", ".join(map(str, scheduler.milestones)) if scheduler else "",
        "parallel": "joblib" in str(launcher),
        "hardware": "one GPU" if run.device.get("type") == "cuda" else f"CPU, {threads} thread(s)",
        "path": relative_path(run.path),
    }


def mnist_frame(jobs: Jobs, budget: str) -> pd.DataFrame:
    """The finished Table 1 runs, one row each in Table 1's model order, with summaries."""
    ok = [j for j in jobs if j.ok]
    if not ok:
        return pd.DataFrame(columns=["model", "seed", "error_pct", "plateau", "quarters"])
    frame = runs_frame(ok, tags=TAGS.get(budget) or None)
    frame = frame.join(pd.DataFrame([_run_columns(j.run) for j in ok]))
    frame["error_pct"] = 100 * frame.get("metric.test/error", math.nan)
    frame["params_m"] = (frame.get("metric.model/params", math.nan) / 1e6).round(6)
    if "tag" in frame:  # Table 1 is the sweeps tagged so (conf/reproduce/mnist.yaml); a run
        frame = frame[frame["tag"].isin(["table1", ""])]  # outside a sweep folder has no tag
    return _in_order(frame)


def epochs_frame(jobs: Jobs) -> pd.DataFrame:
    """One row per finished run and epoch: model, seed, epoch, validation error and the epoch
    means of the training NFE (NaN where a history lacks them), in Table 1's model order."""
    keys = ["epoch", "val/error", *NFE]
    parts = [
        pd.DataFrame(j.run.history, columns=keys)
        .groupby("epoch")
        .first()  # what was logged in that epoch, merged over its history rows
        .assign(model=mt.model_label(j.run), seed=str(j.run.config.seed))
        for j in jobs
        if j.ok
    ]
    frame = pd.concat(parts).reset_index() if parts else pd.DataFrame(columns=["model", *keys])
    return _in_order(frame.rename(columns=NFE))


def nfe_summary(epochs: pd.DataFrame) -> dict[str, Any] | None:
    """The ODE-Net's NFE per epoch (`wide`: epoch x (direction, seed)) and the mean per-epoch
    backward/forward ratio over the last quarter (at least one) of every seed's epochs."""
    nfe = epochs[(epochs["model"] == "ODE-Net") & epochs["forward"].notna()]
    if nfe.empty:
        return None
    last = max(1, int(nfe.groupby("seed").size().min()) // 4)
    tail = nfe.groupby("seed").tail(last)
    wide = nfe.groupby(["epoch", "seed"])[["forward", "backward"]].mean().unstack("seed")
    wide.columns.names = ["NFE", "seed"]
    ratio = (tail["backward"] / tail["forward"]).mean()
    return {"wide": wide, "ratio": ratio, "last": last, "seeds": nfe["seed"].nunique()}


def table1(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per model: test error (%) mean, std and seeds, every seed's plateau words, and
    the first seed's other columns (params, memory, times and NFE: the same net every seed)."""
    grouped = frame.groupby("model", sort=False)
    stats = grouped["error_pct"].agg(["mean", "std", "count"]).join(grouped["plateau"].agg(list))
    return grouped.first().drop(columns="plateau").join(stats).reset_index().to_dict("records")


def _slope(x: Any, y: Any) -> float:
    """Least-squares slope of y on x (NaN without two distinct x; 0 for a flat y, not noise)."""
    if len(set(x)) < 2:
        return math.nan
    return 0.0 if len(set(y)) == 1 else float(np.polyfit(x, y, 1)[0])


def verdicts(frame: pd.DataFrame, budget: str, studies: dict[str, Any]) -> list[cl.Verdict]:
    """Every MNIST claim judged on this budget (or not testable, with why); `studies` holds the
    memory record's ratios and the tolerance rows (None where the budget has no record)."""
    frame = frame.assign(model=frame["model"].map(ARMS))

    def sides(claim: cl.Claim) -> list[list[float]]:
        """The samples of a claim: a study's number, or per seed one or two aligned arms."""
        if claim.section == "tolerance":
            tol = studies["tolerance"]
            y = tol["test_nfe_forward"] if "NFE" in claim.metric else 100 * tol["test_error"]
            return [[_slope(tol["tol"].map(math.log10), y)]]
        if claim.section == "memory":
            return [[r["adjoint_max_over_min"] for r in studies["memory"].values()]]
        if claim.id == "mnist_nfe_grows":  # arms: the last and the first quarter of training
            return [list(seed_values(frame, c, model="odenet")) for c in ("nfe_last", "nfe_first")]
        column = COLUMNS.get(claim.metric, "nfe_ratio")  # backward / forward NFE per step
        names = claim.arms or [claim.id.rsplit("_", 1)[1] if column == "params_m" else "odenet"]
        a, *b = (seed_values(frame, column, model=m) for m in names)
        return [list(s) for s in (a.align(b[0], "inner") if b else [a])]

    def judge(claim: cl.Claim) -> cl.Verdict:
        if claim.kind == "value" and claim.metric == "test error" and budget.startswith("fashion"):
            return cl.not_testable(claim, "Fashion-MNIST: the paper's number is on MNIST")
        if budget not in claim.budgets or studies.get(claim.section, frame) is None:
            testing = ", ".join(f"`{b}`" for b in claim.budgets)
            return cl.not_testable(claim, claim.reason or f"only budgets {testing} test it")
        return cl.evaluate(claim, *sides(claim))

    return [judge(c) for p in PAPERS for c in cl.load_claims(p).values() if c.report == "mnist"]


def _differs(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(setting, paper, ours) where this budget differs from chen2018.yaml's `settings.mnist`."""
    epochs = frame.groupby("model", sort=False)["epochs"].max()
    reached = ", ".join(f"{m} {e}" for m, e in epochs.items()) if epochs.nunique() > 1 else ""
    ours = {
        "Data": "; ".join(frame["data_size"].unique()),
        "Epochs": f"{reached or epochs.iloc[0]} ({frame['steps'].max()} steps of "
        f"{frame['batch'].iloc[0]})",
        "LR x0.1 at": "; ".join(sorted(set(frame["milestones"]) - {""})),
        "Device": ", ".join(frame["hardware"].unique())
        + (", runs in parallel (joblib)" if frame["parallel"].any() else ""),
    }
    paper = cl.paper_settings("chen2018", "mnist")
    return [(k, v, ours[k]) for k, v in paper.items() if ours[k] and ours[k] != v]


def _figures(report_dir: Path, epochs: pd.DataFrame, nfe: Any, mem: Any, tol: Any) -> dict:
    """The figures the records allow, drawn from wide frames: {name: path from the report}."""
    from odelab.plotting import plt

    plots = {}  # name: (wide frame, DataFrame.plot arguments)
    if nfe is not None:
        n, label = nfe["seeds"], "NFE per training step (epoch mean)"
        style = {"style": [".-"] * n + ["x--"] * n, "color": [f"C{i}" for i in range(n)] * 2}
        plots["nfe"] = (nfe["wide"], {**style, "ylabel": label, "ylim": 0, "xlabel": "epoch"})
    val = epochs.dropna(subset=["val/error"])
    if len(val):
        wide = 100 * val.pivot_table("val/error", "epoch", ["model", "seed"], sort=False)
        models = list(wide.columns.unique(0))
        wide.columns = [f"{m}, seed {s}" for m, s in wide.columns]
        groups = [[c for c in wide if c.startswith(f"{m},")] for m in models]
        kw = {"subplots": groups, "title": models, "logy": True, "sharey": True}
        plots["validation"] = (wide, {**kw, "layout": (1, len(models)), "ylabel": "error (%)"})
    if mem is not None:
        wide = mem.pivot_table("peak_mb", "T", ["solver", "sensitivity"])
        style = ["s--" if sens == "adjoint" else "o-" for _, sens in wide.columns]
        plots["mnist_memory"] = (wide, {"style": style, "ylim": 0, "ylabel": "peak MiB"})
    if tol is not None:  # tighter tolerances rightwards
        rows = tol.assign(test_error=100 * tol["test_error"]).set_index("tol").astype(float)
        groups = [["test_error"], [c for c in rows if "nfe" in c], [c for c in rows if "sec" in c]]
        lim, titles = (rows.index.max(), rows.index.min()), ["test error (%)", "NFE", "seconds"]
        kw = {"subplots": groups, "layout": (1, 3), "logx": True, "xlim": lim, "title": titles}
        plots["mnist_tolerance"] = (rows[sum(groups, [])], kw)
    for name, (wide, kw) in plots.items():
        size = (3.3 * len(kw.get("subplots", [0, 0])), 3.8)
        fig = np.ravel(wide.plot(**{"figsize": size, "style": ".-", **kw}))[0].figure
        fig.tight_layout()
        fig.savefig(report_dir / f"{name}.png", dpi=110)
        plt.close(fig)
    return {name: f"{report_dir.name}/{name}.png" for name in plots}


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts, Figure 3, Table 1, the memory and tolerance studies, what differs."""
    frame, epochs, bench = mnist_frame(jobs, budget), epochs_frame(jobs), jobs.bench
    memory, tolerance = (
        load_record(f"bench/{n}.json", s, data=bench[n]) if n in bench else None
        for n, s in SCHEMAS.items()
    )
    mem, tol = (pd.DataFrame(map(asdict, r.rows)) if r else None for r in (memory, tolerance))
    studies = {"memory": memory.ratios if memory else None, "tolerance": tol}
    report_dir.mkdir(parents=True, exist_ok=True)
    judged = verdicts(frame, budget, studies) if len(frame) else []
    cl.write_claims(report_dir / "claims.json", judged)
    direct = mem[mem["sensitivity"] == "direct"].groupby("solver") if memory else {}
    nfe = nfe_summary(epochs)
    return render(
        "mnist.md.j2",
        budget=budget,
        judged=judged,
        labels={c.id: c.text for p in PAPERS for c in cl.load_claims(p).values()},
        table=table1(frame),
        runs=frame.to_dict("records"),
        failed=[(relative_path(j.run.path), j.overrides) for j in jobs if not j.ok],
        differs=_differs(frame) if len(frame) else [],
        unresolved=next(d for d in range(1, 64) if resolvable(d)) - 1,
        plateau_tolerance=mt.PLATEAU_TOLERANCE,
        nfe=nfe,
        figures=_figures(report_dir, epochs, nfe, mem, tol),
        memory=memory,
        slopes={s: _slope(g["nfe_forward"], g["peak_mb"]) for s, g in direct},
        tolerance=tolerance,
    )


MNIST = Reproduction.from_conf(
    "mnist", "ODE-Net vs ResNet, RK-Net and MLP on MNIST (Chen et al. 2018, Table 1)", build_report
)
