"""Report for latent ODEs on irregularly sampled series (Rubanova et al. 2019): the latent ODE
against the RNN fed the time gaps and the ODE-RNN on the periodic toy data and yearly sunspots
(each sweep's section is its tag in `conf/reproduce/latent.yaml`). The runs become one pandas
frame, judged on `conf/claims/rubanova2019.yaml` into `claims.json`; the union-of-times
benchmark (`experiments/bench_latent.py`) is typed as `BenchLatent`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import odelab.reports.claims as cl
import odelab.reports.parts as parts
from odelab.plotting import plt
from odelab.reports.base import Jobs, Reproduction, load_jobs, record_plots, records_dir
from odelab.reports.frame import runs_frame, seed_values
from odelab.reports.mnist_table import PLATEAU_TOLERANCE, plateau_state
from odelab.reports.render import render
from odelab.reports.stats import compare

PAPER = "rubanova2019"
CLAIMS = list(cl.load_claims(PAPER).values())
MODELS = {
    "latent_ode": "latent ODE (ODE-RNN encoder)",
    "rnn_baseline": "RNN with time gaps",
    "ode_rnn": "ODE-RNN",
}
DATASETS = {
    "periodic": "noisy periodic series (toy)",
    "sunspots": "yearly sunspot record",
    **{f"hopper_{p}": f"MuJoCo Hopper, {p} % of the first half observed" for p in (10, 20, 30, 50)},
}
# Per-run columns of the results table, frame column -> (header, spec); NFE and step time are
# the last epoch's means, read from the history (`EPOCHS`).
COLUMNS = {
    "metric.test/interp_mse": ("interp MSE", ".3g"),
    "metric.test/extrap_mse": ("extrap MSE", ".3g"),
    "metric.val/extrap_mse": ("val extrap MSE", ".3g"),
    "metric.test/elbo": ("test ELBO", ".1f"),
    "metric.test/iwae": ("test IWAE", ".1f"),
    "nfe_fwd": ("NFE fwd / step", ".0f"),
    "nfe_bwd": ("NFE bwd / step", ".0f"),
    "step_s": ("s / step", ".3f"),
    "wall_s": ("s / run", ".0f"),
}
EPOCHS = {"nfe_fwd": "nfe_forward", "nfe_bwd": "nfe_backward", "step_s": "step_time"}


@dataclass
class UnionRow:
    """One training step solved on the union of the batch's times against once per series."""

    grid_size: int
    sensitivity: str
    batch_size: int
    union_times: int
    own_times_mean: float
    union_seconds: float
    alone_seconds: float
    union_nfe: dict
    alone_nfe: dict
    repeats: int


@dataclass
class NfeOverTraining:
    sensitivity: str
    steps: int
    step: list[int]
    decoder_forward: list[int]
    decoder_backward: list[int]
    encoder_forward: list[int]
    loss: list[float]
    seconds: list[float]


@dataclass
class BenchLatent:
    """`bench/bench_latent.json` (experiments/bench_latent.py)."""

    device: dict
    union_vs_alone: list[UnionRow]
    nfe_over_training: NfeOverTraining
    seconds: float


def latent_frame(jobs: Jobs, budget: str) -> pd.DataFrame:
    """Every run, one row each, with the section tag as `dataset` and last-epoch NFE and step
    time."""
    epochs = {column: f"train/{key}_epoch" for column, key in EPOCHS.items()}
    frame = parts.report_frame(jobs, "latent", budget, epochs, pick=lambda values: values[-1])
    frame = _with_curves(frame, jobs)
    if "tag" not in frame:  # runs read outside a tagged budget: the data override decides
        frame["tag"] = frame["data"] if "data" in frame else "periodic"
    return frame.assign(dataset=frame["tag"].replace("", "periodic").fillna("periodic"))


def results(frame: pd.DataFrame, dataset: str) -> list[tuple[str, int, pd.Series, pd.Series]]:
    """Per model (in MODELS order): its label, runs, and the mean and std over them of each
    table column."""
    rows = frame[frame["dataset"] == dataset]
    groups = rows.reindex(columns=list(COLUMNS)).astype(float).groupby(rows["experiment"])
    mean, std, n = groups.mean(), groups.std(), groups.size()
    return [(MODELS[m], n[m], mean.loc[m], std.loc[m]) for m in MODELS if m in n]


def verdicts(
    frame: pd.DataFrame, budget: str, baseline: pd.DataFrame | None = None
) -> list[cl.Verdict]:
    """Every claim of rubanova2019.yaml judged on this budget, or not testable with why. A claim
    on an ablation factor whose sweep trained one model only takes the other from `baseline`
    (odelab's setup), as the ablation table does."""

    def measure(claim: cl.Claim) -> tuple:
        metric, _, scale = claim.metric.partition(" x ")  # "... MSE x 1e-2": in units of 1e-2
        column = "metric." + metric.replace("test ", "test/").replace("olation MSE", "_mse")
        rows = frame[frame["dataset"] == claim.section]
        a, b = (seed_values(rows, column, experiment=arm) for arm in claim.arms)
        if (
            claim.section in FACTORS
            and baseline is not None
            and len(a) + len(b)
            and not (len(a) and len(b))
        ):
            a, b = (
                v if len(v) else seed_values(baseline, column, experiment=arm)
                for v, arm in zip((a, b), claim.arms, strict=True)
            )
        a, b = a.align(b, join="inner")
        return (a / float(scale), b / float(scale)) if scale else (a, b)

    return parts.judge(CLAIMS, budget, measure)


def nfe_summary(bench: BenchLatent, report_dir: Path) -> dict[str, Any]:
    """The decoder NFE at the start and end of training (means over a tenth of the steps), the
    encoder's, and the figure of NFE over training."""
    train = bench.nfe_over_training
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(train.step, train.decoder_forward, lw=1, label="decoder forward")
    backward = f"decoder backward ({train.sensitivity})"
    ax.plot(train.step, train.decoder_backward, lw=1, label=backward)
    ax.set(xlabel="training step", ylabel="NFE per step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(report_dir / "nfe_over_training.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    decoder = pd.DataFrame({"fwd": train.decoder_forward, "bwd": train.decoder_backward})
    tenth = max(1, len(decoder) // 10)
    return {
        "tenth": tenth,
        "first": tuple(decoder.head(tenth).mean()),
        "last": tuple(decoder.tail(tenth).mean()),
        "encoder": pd.Series(train.encoder_forward, dtype=float).mean(),
        "figure": f"{report_dir.name}/nfe_over_training.png",
    }


def _ours(done: pd.DataFrame, jobs: Jobs) -> dict[str, str] | None:
    """Our settings, from the first finished latent ODE run's config."""
    first = next((j for j in jobs if j.ok and j.overrides.get("experiment") == "latent_ode"), None)
    cfg = first.run.config if first else None
    if cfg is None:
        return None
    sunspots = "; yearly sunspot windows" if (done["dataset"] == "sunspots").any() else ""
    longest = done["wall_s"].max() / 60
    return {
        "Data": (
            f"{cfg.data.n_train} simulated Hopper series of {cfg.data.steps} steps"
            if "steps" in cfg.data
            else f"{cfg.data.n_train} periodic series of {cfg.data.grid_size} grid times (toy)"
        )
        + sunspots,
        "Latent dimension": str(cfg.model.latent_dim),
        "Training": f"{cfg.trainer.max_epochs} epochs (toy), at most {longest:.1f} min a run",
        "Baselines": ", ".join(MODELS[m] for m in BASELINES if (done["experiment"] == m).any())
        + "; the ODE-RNN trained "
        + BASELINE_TRAINING[baseline_training(done)],
        "Device": "; ".join(done["device"].unique()),
    }


# Issue 41's one-factor-at-a-time ablation from odelab's setup toward the reference's: the
# section tag of each sweep of `authors_ablation` (conf/reproduce/latent.yaml) names the factor.
FACTORS = {
    "protocol": "protocol: loss on the future only, the decoder solving from the first future time",
    "training": "training: Adamax 1e-2 decayed x0.999 a step to 1e-3, 8,000 steps",
    "kl_likelihood": "KL and likelihood: obs std 0.01, the reference's KL schedule and ELBO",
    "data": "data: unit sines of phase 0, f ~ U[0.4, 0.8], small uniform noise",
    "capacity": "capacity: latent 10, 100-unit fields",
    "size": "data size: 800 training series",
    "baseline_training": "the ODE-RNN trained one step ahead on the observation window only",
}
EXTRAP = "metric.test/extrap_mse"
VAL = "val/extrap_mse"  # the validation curve: its plateau and the ablation's figure


def _with_curves(frame: pd.DataFrame, jobs: Jobs) -> pd.DataFrame:
    """`frame` with each run's validation curve (`curve`: epochs, values of `VAL`) and whether
    it reached a plateau over its last quarter of epochs (`plateau`, `plateau_state`)."""
    curves = [j.run.epoch_series(VAL) for j in jobs]
    return frame.assign(
        curve=curves, plateau=[plateau_state(*c)[0] if c[1] else "unknown" for c in curves]
    )


ORDERING = {
    "better": "latent ODE better",
    "worse": "ODE-RNN better",
    "within noise": "within noise",
}


def baseline_frame(reports: Path | None = None) -> pd.DataFrame:
    """odelab's setup: the cpu budget's committed periodic runs (its sweep 0)."""
    sweep = records_dir("latent", "cpu", reports) / "0"
    if not sweep.is_dir():
        return pd.DataFrame(columns=["ok"])
    jobs = [j for j in load_jobs(sweep) if j.ok]
    return _with_curves(runs_frame(jobs), jobs)


def ablation(frame: pd.DataFrame, baseline: pd.DataFrame) -> list[dict[str, Any]]:
    """Per factor (the baseline first): each model's test extrapolation MSE over seeds, the paired
    95 % interval of latent ODE - ODE-RNN and the ordering it gives; a factor that changes the
    latent ODE alone is compared with the baseline's ODE-RNN, and one that changes the ODE-RNN
    alone with the baseline's latent ODE. `flips`: the ordering is not the
    baseline's; `plateau`: the latent ODE runs whose validation curve reached a plateau over
    their last quarter of epochs, and how many runs."""
    factors = [f for f in FACTORS if f in set(frame.get("tag", ()))]
    if not factors or "experiment" not in baseline:
        return []
    rows, first = [], None
    for factor in ["baseline", *factors]:
        runs = baseline if factor == "baseline" else frame[frame["tag"] == factor]
        latent = seed_values(runs, EXTRAP, experiment="latent_ode")
        odernn = seed_values(runs, EXTRAP, experiment="ode_rnn")
        changed = {(True, True): "both", (True, False): "latent ODE", (False, True): "ODE-RNN"}
        changed = changed.get((bool(len(latent)), bool(len(odernn))), "neither")
        if not len(latent):
            runs, latent = baseline, seed_values(baseline, EXTRAP, experiment="latent_ode")
        states = runs["plateau"][runs["experiment"] == "latent_ode"] if "plateau" in runs else []
        if not len(odernn):
            odernn = seed_values(baseline, EXTRAP, experiment="ode_rnn")
        a, b = latent.align(odernn, join="inner")
        c = compare(
            list(a), list(b), a_name="latent_ode", b_name="ode_rnn", metric=EXTRAP,
            higher_is_better=False,
        )  # fmt: skip
        ordering = ORDERING.get(c.outcome, "n/a")
        first = first or ordering
        rows.append(
            {
                "factor": FACTORS.get(factor, "odelab's setup (budget `cpu`)"),
                "changed": "—" if factor == "baseline" else changed,
                "latent": (latent.mean(), latent.std(), len(latent)),
                "odernn": (odernn.mean(), odernn.std(), len(odernn)),
                "diff": (c.mean_diff, c.low, c.high, c.n),
                "ordering": ordering,
                "flips": factor != "baseline" and ordering != first,
                "plateau": (sum(s == "plateau" for s in states), len(states)),
            }
        )
    return rows


def gap_figure(jobs: Jobs, done: pd.DataFrame, report_dir: Path) -> str | None:
    """Extrapolation MSE against time since the last observation (each run's
    `extrap_by_gap.json`), mean over seeds per bin, one panel per section with such records."""
    curves: dict[str, dict[str, list[tuple[list[float], list[float | None]]]]] = {}
    for r in done.itertuples():
        path = jobs[r.Index].output_dir / "extrap_by_gap.json"
        if path.is_file() and r.experiment in MODELS:
            record = json.loads(path.read_text())
            edges = record["edges"]
            centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
            curves.setdefault(r.dataset, {}).setdefault(r.experiment, []).append(
                (centres, record["mse"])
            )
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3), squeeze=False)
    for ax, (section, models) in zip(axes[0], curves.items(), strict=True):
        for model, runs in models.items():
            table = pd.DataFrame([dict(zip(c, m, strict=True)) for c, m in runs], dtype=float)
            ax.plot(
                table.columns, table.mean(), marker=".", label=f"{MODELS[model]} (n={len(runs)})"
            )
        ax.set_title(DATASETS.get(section, f"factor: {section}"), fontsize=8)
        ax.set(yscale="log")
        ax.set(xlabel="time since the last observation", ylabel="extrapolation MSE")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(report_dir / "extrap_by_gap.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return f"{report_dir.name}/extrap_by_gap.png"


def curves_figure(frame: pd.DataFrame, baseline: pd.DataFrame, report_dir: Path) -> str | None:
    """Validation extrapolation MSE per epoch of the ablation's runs, one panel per factor (the
    baseline first), one line per run, coloured by model."""
    frames = [("baseline", baseline)] + [(f, frame[frame["tag"] == f]) for f in FACTORS]
    panels = [(f, runs) for f, runs in frames if "curve" in runs and len(runs)]
    if len(panels) < 2:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.6), squeeze=False)
    for ax, (factor, runs) in zip(axes[0], panels, strict=True):
        for i, model in enumerate(("latent_ode", "ode_rnn")):
            for n, (epochs, values) in enumerate(runs.loc[runs["experiment"] == model, "curve"]):
                label = MODELS[model] if n == 0 else None
                ax.plot(epochs, values, color=f"C{i}", lw=0.8, label=label)
        ax.set(yscale="log", xlabel="epoch", title=factor)
    axes[0][0].set(ylabel="validation extrapolation MSE")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(report_dir / "ablation_curves.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return f"{report_dir.name}/ablation_curves.png"


BASELINES = ("rnn_baseline", "ode_rnn")
BASELINE_TRAINING = {
    "observed": "one step ahead on the observed points only (`model.score_on=observed`)",
    "future": "also on the future window, free-running; the reference's way: budgets "
    "authors_ablation (factor baseline_training), hopper_observed, hopper_more_observed",
    "mixed": "also on the future window, except factor baseline_training (observed points only)",
}


def baseline_training(done: pd.DataFrame) -> str:
    """How the budget's ODE-RNN runs were trained: "observed" (one step ahead on the observed
    points only, the reference's), "future" (also on the future window, odelab's) or "mixed"."""
    odernn = done[done["experiment"] == "ode_rnn"]
    observed = odernn.get("++model.score_on", pd.Series(index=odernn.index, dtype=object))
    share = (observed == "observed").mean() if len(odernn) else 0.0
    return "observed" if share == 1 else "mixed" if share else "future"


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Headline verdicts, a results table and figures per dataset, the benchmark, Hopper."""
    frame = latent_frame(jobs, budget)
    done = frame[frame["ok"].astype(bool)]
    baseline = baseline_frame()
    judged = verdicts(frame, budget, baseline)
    cl.write_claims(report_dir / "claims.json", judged)
    main = [v for v in judged if not (v.section or "").startswith("hopper")]
    tested = [v for v in judged if v.verdict != cl.VERDICTS[-1]]
    # The opening shows what this budget tested: the toy and sunspot claims, else Hopper's.
    headline = [v for v in tested if v in main] or tested or main
    bench = parts.bench_record(jobs, "bench_latent", BenchLatent)
    # The test-series figures of the first seed of each dataset and model, in run order,
    # linked where the run's record stores them.
    figures: dict[str, list[tuple[str, str]]] = {d: [] for d in DATASETS}
    known = done[done["dataset"].isin(DATASETS) & done["experiment"].isin(MODELS)]
    for r in known.drop_duplicates(["dataset", "experiment"]).itertuples():
        figures[r.dataset] += [(MODELS[r.experiment], p) for p in record_plots(jobs[r.Index])]
    return render(
        "latent.md.j2",
        budget=budget,
        headline=headline,
        untested=sum(v.verdict == cl.VERDICTS[-1] for v in main) if headline != main else 0,
        hopper=[v for v in judged if (v.section or "").startswith("hopper")],
        labels={c.id: c.text for c in CLAIMS},
        figure=next((p for _, p in figures["periodic"] if p.endswith("/extrapolation.png")), None),
        differs=parts.differs(PAPER, "latent", _ours(done, jobs)),
        columns=COLUMNS,
        datasets=[(DATASETS[d], results(done, d), figures[d]) for d in DATASETS],
        seeds=", ".join(sorted(done["seed"].unique(), key=int)) or "none",
        baseline_training=baseline_training(done),
        minutes=done["wall_s"].sum() / 60,
        bench=bench,
        nfe=nfe_summary(bench, report_dir) if bench else None,
        gap_figure=gap_figure(jobs, done, report_dir),
        ablation=ablation(done, baseline),
        plateau_tolerance=PLATEAU_TOLERANCE,
        unmeasured=[text for f, text in FACTORS.items() if f not in set(done.get("tag", ()))],
        curves_figure=curves_figure(done, baseline, report_dir)
        if "tag" in done and done["tag"].isin(list(FACTORS)).any()
        else None,
        runs=frame.to_dict("records"),
    )


LATENT = Reproduction.from_conf(
    "latent", "Latent ODEs for irregularly sampled time series (Rubanova et al. 2019)", build_report
)
