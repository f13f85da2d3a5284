"""Report for the toy-density results: CNF vs planar flow (Chen et al. 2018) and RNODE.

Three sweeps per budget, over the two targets of the acceptance (8gaussians,
2spirals): the CNF and the K=64 planar flow with the same steps; the CNF at
the RNODE papers' tolerance 1e-5 without regularizers; the same with them
(`experiment=cnf_toy_rnode`). The last two differ only in the two weights.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from odelab.reports.base import (
    JobResult,
    Jobs,
    Reproduction,
    by_seed,
    conf_budgets,
    copy_plots,
    device_label,
    fmt_mean_std,
    markdown_table,
    mean_std,
    paired,
    run_config,
    runs_section,
)
from odelab.reports.cnf_cpu import build_cpu_report, nfe_per_step, study
from odelab.reports.stats import compare

BUDGETS, BENCHMARKS = conf_budgets("cnf")

# What the papers claim; they show figures, not NLL tables, for these targets.
CLAIMS = {
    "planar": "the CNF fits multimodal targets the planar flow cannot (Chen et al. 2018, Figure 4)",
    "rnode": ">= 2x fewer function evaluations per step at test NLL within 0.05 nats "
    "(RNODE, Finlay et al. 2020; the threshold is this project's)",
}


def _label(job: JobResult) -> str:
    """Which model a job trained: planar, cnf (tol 1e-3), cnf_1e-5 or rnode."""
    cfg = run_config(job)
    experiment = job.overrides.get("experiment", "?")
    if experiment == "planar_flow":
        return "planar"
    if cfg is not None and (
        cfg.model.get("kinetic_weight", 0) > 0 or cfg.model.get("jacobian_weight", 0) > 0
    ):
        return "rnode"
    return "cnf_1e-5" if experiment == "cnf_toy_rnode" else "cnf"


def _nfe_per_step(job: JobResult) -> float:
    return nfe_per_step(job.metrics)


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """CNF vs planar table, RNODE NFE table (mean ± std over seeds) and the density plots;
    budgets with the FFJORD-standard studies (`odelab.reports.cnf_cpu`) get that report."""
    if "bench_cnf_recipes" in getattr(jobs, "bench", {}) or any(study(j) != "other" for j in jobs):
        return build_cpu_report(jobs, budget, report_dir)
    done = [j for j in jobs if j.ok]
    failed = [j for j in jobs if not j.ok]
    groups: dict[tuple[str, str], list[JobResult]] = defaultdict(list)
    for job in done:
        groups[job.overrides.get("data.name", "?"), _label(job)].append(job)
    targets = sorted({t for t, _ in groups})

    def nll(target: str, label: str) -> list[float]:
        return [j.metrics.get("test/nll") for j in groups.get((target, label), [])]

    lines = [
        "# Continuous normalizing flows on toy 2D densities (reproduction report)",
        "",
        f"Written by `make reproduce-cnf budget={budget}` from the runs listed at the end.",
        "Test NLL in nats on a fixed set of 10,000 points per target, exact trace.",
        "",
        f"- Budget: `{budget}`; {len(done)} runs finished, {len(failed)} failed.",
        f"- Steps per run: {_steps(done[0]) if done else 'n/a'}; the papers train for 10,000+ "
        "iterations.",
        f"- Device: {device_label(done)}.",
        "",
        "## CNF vs planar flow (K = 64), same steps",
        "",
        f"Claim: {CLAIMS['planar']}.",
        "",
    ]
    rows, verdicts = [], []
    for target in targets:
        cnf, planar = nll(target, "cnf"), nll(target, "planar")
        l1 = {
            k: [j.metrics.get("test/density_l1") for j in groups.get((target, k), [])]
            for k in ("cnf", "planar")
        }
        outcome = "n/a"
        if cnf and planar:
            a, b = paired(
                by_seed(groups[target, "cnf"], "test/nll"),
                by_seed(groups[target, "planar"], "test/nll"),
            )
            comparison = compare(
                a,
                b,
                a_name="CNF",
                b_name="planar K=64",
                metric=f"test NLL on {target}",
                higher_is_better=False,
            )
            outcome = comparison.outcome
            verdicts.append(f"- {comparison.verdict}")
        l1_text = (
            f"{fmt_mean_std(l1['cnf'], spec='.3f')} / {fmt_mean_std(l1['planar'], spec='.3f')}"
        )
        rows.append(
            [
                target,
                fmt_mean_std(cnf, spec=".3f"),
                fmt_mean_std(planar, spec=".3f"),
                l1_text,
                outcome,
            ]
        )
    lines += [
        markdown_table(
            [
                "target",
                "CNF test NLL",
                "planar K=64 test NLL",
                "density L1 (CNF / planar)",
                "CNF vs planar (95 % CI)",
            ],
            rows,
        ),
        "",
    ]
    lines += [*verdicts, ""] if verdicts else []

    lines += [
        "## RNODE regularizers: NFE per training step at dopri5 tolerance 1e-5",
        "",
        f"Claim: {CLAIMS['rnode']}.",
        "",
    ]
    rows = []
    for target in targets:
        plain, reg = groups.get((target, "cnf_1e-5"), []), groups.get((target, "rnode"), [])
        if not plain or not reg:
            continue
        nfe_plain = mean_std([_nfe_per_step(j) for j in plain])[0]
        nfe_reg = mean_std([_nfe_per_step(j) for j in reg])[0]
        d_nll = mean_std(nll(target, "rnode"))[0] - mean_std(nll(target, "cnf_1e-5"))[0]
        ratio = nfe_plain / nfe_reg
        met = "yes" if ratio >= 2 and d_nll <= 0.05 else "**no**"
        rows.append(
            [
                target,
                fmt_mean_std(nll(target, "cnf_1e-5"), spec=".3f"),
                fmt_mean_std(nll(target, "rnode"), spec=".3f"),
                f"{d_nll:+.3f}",
                f"{nfe_plain:.1f}",
                f"{nfe_reg:.1f}",
                f"{ratio:.2f}",
                met,
            ]
        )
    lines += [
        markdown_table(
            [
                "target",
                "NLL none",
                "NLL RNODE",
                "dNLL",
                "NFE/step none",
                "NFE/step RNODE",
                "none / RNODE",
                "claim met",
            ],
            rows,
        ),
        "",
    ]
    rnode = next((j for j in done if _label(j) == "rnode"), None)
    rnode_cfg = run_config(rnode) if rnode else None
    if rnode_cfg is not None:
        model = rnode_cfg.model
        lines += [
            f"RNODE weights: kinetic {model.kinetic_weight}, Jacobian {model.jacobian_weight}.",
            "",
        ]

    plots = []
    for job in done:
        if _label(job) in ("cnf", "planar") and job.overrides.get("seed", "0") in ("0", None):
            prefix = f"{job.overrides.get('data.name', 'target')}_{_label(job)}_"
            plots += copy_plots(job, report_dir, prefix)
    if plots:
        lines += ["## Plots (seed 0)", ""]
        lines += [f"![{p.stem}]({report_dir.name}/{p.name})" for p in plots]
        lines.append("")
    lines += [
        "## What differs from the papers",
        "",
        "- Steps: far fewer than the papers' 10,000+ iterations (see above); the `quick` budget "
        "only",
        "  checks the pipeline.",
        "- The K-vs-M capacity figure is made by `experiments/cnf_capacity.py`.",
        "",
    ]
    labels = [
        (
            f"{_label(j)}, {j.overrides.get('data.name')}, seed {j.overrides.get('seed', '0')}",
            j.output_dir,
        )
        for j in done
    ]
    return "\n".join(lines + runs_section(labels, failed))


def _steps(job: JobResult) -> str:
    cfg = run_config(job)
    keys = ("trainer.max_epochs", "data.batches_per_epoch", "data.batch_size")
    values = [OmegaConf.select(cfg, k) for k in keys] if cfg is not None else [None]
    if None in values:
        return "n/a (run config not found)"
    epochs, batches, batch_size = values
    return f"{epochs * batches} ({epochs} epoch(s) x {batches} batches of {batch_size})"


CNF = Reproduction(
    name="cnf",
    title="CNF vs planar flow and RNODE regularizers on toy 2D densities",
    budgets=BUDGETS,
    benchmarks=BENCHMARKS,
    build=build_report,
)
