"""The CNF studies at the FFJORD standard (budgets `cpu*` of `make reproduce-cnf`).

Six studies, each recognised from a run's overrides, any subset of them per budget:

- selection: `experiment=cnf_fast` over the training step size, the regularizer weight
  and the number of steps on one target, ranked by validation NLL only;
- targets: `experiment=cnf_fast` on the eight FFJORD targets, exact vs Hutchinson
  trace in training (always scored with the exact trace and dopri5 1e-5);
- capacity: planar flow with K layers (`model.flow.layers`) vs the seed paper's
  hyper-network CNF with M units (`model/flow/field=hyper`), at the fast recipe's budget;
- RNODE: `experiment=cnf_rnode` (FFJORD's adaptive recipe) over the regularizer weight
  (`model.kinetic_weight`, the Jacobian weight following it), end time fixed or learned;
- seminorm: `experiment=cnf_ffjord` with the adjoint, `sensitivity.seminorm` off and on;
- recipes: the benchmark of `experiments/bench_cnf.py --part recipes` (its JSON).

Everything below is read from the run records and the benchmark JSON.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib import image as mpimg
from omegaconf import OmegaConf

from odelab.data.toy2d import SAMPLERS
from odelab.plotting import plt
from odelab.reports.base import (
    JobResult,
    Jobs,
    compare_jobs,
    device_label,
    fmt_mean_std,
    markdown_table,
    mean_std,
    run_config,
    runs_section,
)
from odelab.reports.stats import compare

TARGET_ORDER = tuple(SAMPLERS)
# NLL within this many nats counts as matched (the tolerance for "same likelihood").
MATCH_NATS = 0.05
SPEEDUP_TARGET = 3.0


def nfe_per_step(metrics: dict[str, float]) -> float:
    """Forward plus backward evaluations per training step, averaged over the last epoch."""
    forward = metrics.get("train/nfe_forward_epoch", float("nan"))
    return forward + metrics.get("train/nfe_backward_epoch", 0.0)


def study(job: JobResult) -> str:
    """selection, targets, capacity, rnode, seminorm or other, from the job's overrides."""
    o = job.overrides
    experiment = o.get("experiment")
    if experiment == "planar_flow" and "model.flow.layers" in o:
        return "capacity"
    if experiment == "cnf_ffjord" and "sensitivity.seminorm" in o:
        return "seminorm"
    if experiment == "cnf_rnode":
        return "rnode"
    if experiment == "cnf_fast":
        if "solver.step_size" in o:
            return "selection"
        if o.get("model/flow/field") == "hyper":
            return "capacity"
        if "model.kinetic_weight" in o:
            return "rnode"
        return "targets"
    return "other"


def _target(job: JobResult) -> str:
    return job.overrides.get("data.name", "8gaussians")


def _seed(job: JobResult) -> str:
    return job.overrides.get("seed", "0")


def _select(cfg: object, key: str) -> object:
    return OmegaConf.select(cfg, key) if cfg is not None else None


def _ordered(targets: set[str]) -> list[str]:
    return sorted(targets, key=lambda t: (TARGET_ORDER.index(t) if t in TARGET_ORDER else 99, t))


def _values(jobs: Sequence[JobResult], get: Callable[[JobResult], float | None]) -> list[float]:
    return [v for v in (get(j) for j in jobs) if v is not None]


def _metric(key: str) -> Callable[[JobResult], float | None]:
    return lambda job: job.metrics.get(key)


def _train_seconds(job: JobResult) -> float | None:
    return job.run.step_seconds


def _steps_text(job: JobResult) -> str:
    cfg = run_config(job)
    epochs, batches, batch = (
        _select(cfg, k) for k in ("trainer.max_epochs", "data.batches_per_epoch", "data.batch_size")
    )
    if None in (epochs, batches, batch):
        return "n/a"
    return f"{epochs * batches} steps of batch {batch}"


def _recipe_text(job: JobResult) -> str:
    cfg = run_config(job)
    method, step, rtol = (_select(cfg, f"solver.{k}") for k in ("method", "step_size", "rtol"))
    train = f"{method} (step {step})" if step is not None else f"{method} (rtol {rtol})"
    lr, kinetic, jacobian = (
        _select(cfg, f"model.{k}") for k in ("optimizer.lr", "kinetic_weight", "jacobian_weight")
    )
    return (
        f"{_steps_text(job)}, training solver {train}, lr {lr}, "
        f"kinetic weight {kinetic}, Jacobian weight {jacobian}"
    )


def selection_section(jobs: list[JobResult]) -> list[str]:
    """The fast recipe's settings ranked by final validation NLL (test NLL is not shown).

    The rule: among the settings within MATCH_NATS of the lowest validation NLL (the same
    likelihood, in this report's terms), the one with the fewest training evaluations
    (steps x rk4 evaluations per solve); ties go to the lower validation NLL.
    """
    groups: dict[tuple[str, float, float, int], list[JobResult]] = defaultdict(list)
    costs: dict[tuple[str, float, float, int], int] = {}
    for job in jobs:
        cfg = run_config(job)
        steps = int(_select(cfg, "trainer.max_epochs") * _select(cfg, "data.batches_per_epoch"))
        step = float(_select(cfg, "solver.step_size"))
        key = (_target(job), step, float(_select(cfg, "model.kinetic_weight")), steps)
        groups[key].append(job)
        t_end = float(_select(cfg, "model.flow.t_end") or 1.0)
        costs[key] = steps * 4 * math.ceil(round(t_end / step, 9))
    rows, scores = [], {}
    for key, runs in sorted(groups.items()):
        target, step, weight, steps = key
        val = _values(runs, _metric("val/nll"))
        scores[key] = mean_std(val)[0] if val else math.inf
        rows.append(
            [
                target,
                f"{step:g}",
                f"{weight:g}",
                str(steps),
                f"{costs[key] / 1000:.0f}k",
                fmt_mean_std(val, spec=".3f"),
                fmt_mean_std(_values(runs, _metric("val/nfe_forward")), spec=".0f"),
                fmt_mean_std(_values(runs, _train_seconds), spec=".0f"),
                str(len(runs)),
            ]
        )
    lowest = min(scores.values())
    near = [k for k, v in scores.items() if v <= lowest + MATCH_NATS]
    best = min(near, key=lambda k: (costs[k], scores[k]))
    header = [
        "target", "rk4 step", "lambda", "steps", "train NFE", "val NLL", "val NFE", "train s", "n"
    ]  # fmt: skip
    return [
        "## Choosing the fast recipe (validation only)",
        "",
        "`experiment=cnf_fast` (rk4 training, dopri5 1e-5 exact-trace evaluation, cosine "
        "learning rate over the run) over the rk4 step size, lambda (kinetic = Jacobian weight) "
        "and the number of steps, scored by the final validation NLL (direction: minimize; "
        "2000 held-out points). Train NFE: field evaluations of all training solves (steps x "
        "4 per rk4 step x steps per solve). Val NFE: dopri5 1e-5 evaluations of one "
        "validation solve. Train s: seconds of training steps (measured step times summed; "
        "two runs shared the 2 cores). The rule: among the settings within "
        f"{MATCH_NATS} nats of the lowest validation NLL, the fewest training evaluations.",
        "",
        markdown_table(header, rows),
        "",
        f"Lowest validation NLL: {lowest:.3f}. Selected: rk4 step {best[1]:g}, lambda "
        f"{best[2]:g}, {best[3]} steps on {best[0]} (validation NLL {scores[best]:.3f}, "
        f"{costs[best] / 1000:.0f}k training evaluations); the later studies use this setting "
        "(their recipe line says what they ran).",
        "",
    ]


def _tile(images: list[tuple[str, Path | None]], columns: int, path: Path, title: str) -> Path:
    """A grid of PNG records (or blank tiles), each with its caption."""
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (caption, png) in zip(axes.ravel(), images, strict=False):
        if png is not None and png.is_file():
            ax.imshow(mpimg.imread(png))
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _density_png(job: JobResult) -> Path:
    return job.output_dir / "plots" / "density.png"


def _figure_line(report_dir: Path, path: Path, alt: str) -> str:
    return f"![{alt}]({report_dir.name}/{path.name})"


# --- the eight targets -------------------------------------------------------------------


def targets_section(jobs: list[JobResult], report_dir: Path) -> list[str]:
    groups: dict[tuple[str, str], list[JobResult]] = defaultdict(list)
    for job in jobs:
        estimator = _select(run_config(job), "trace.estimator") or job.overrides.get("trace", "?")
        groups[_target(job), str(estimator)].append(job)
    targets = _ordered({t for t, _ in groups})
    lines = [
        "## The eight FFJORD targets with the fast recipe",
        "",
        f"Recipe: {_recipe_text(jobs[0])}. Test NLL in nats on "
        f"{_select(run_config(jobs[0]), 'data.n_test')} test points, always with "
        "the exact trace and dopri5 at rtol = atol = 1e-5, whatever the training trace. "
        "NFE/step: forward evaluations per training step (last epoch); test NFE: evaluations of "
        "one dopri5 1e-5 test solve; train s: seconds of training steps per run (the sum of "
        "the measured step times; evaluations excluded).",
        "",
    ]
    rows, verdicts = [], []
    for target in targets:
        exact, hutch = groups.get((target, "exact"), []), groups.get((target, "hutchinson"), [])
        cells = [target]
        for side in (exact, hutch):
            cells.append(f"{fmt_mean_std(_values(side, _metric('test/nll')), spec='.3f')}")
        outcome = "n/a"
        if exact and hutch:
            c = compare_jobs(
                hutch,
                exact,
                "test/nll",
                a_name="Hutchinson training",
                b_name="exact-trace training",
                metric=f"test NLL on {target}",
                higher_is_better=False,
            )
            outcome = f"{c.mean_diff:+.3f} {c.interval_text('.3f')} ({c.outcome})"
            verdicts.append(f"- {c.verdict}")
        cells.append(outcome)
        for side in (exact, hutch):
            cells.append(fmt_mean_std(_values(side, lambda j: nfe_per_step(j.metrics)), spec=".0f"))
        cells.append(fmt_mean_std(_values(exact + hutch, _metric("test/nfe_forward")), spec=".0f"))
        for side in (exact, hutch):
            cells.append(fmt_mean_std(_values(side, _train_seconds), spec=".0f"))
        l1 = _values(exact, _metric("test/density_l1"))
        cells.append(fmt_mean_std(l1, spec=".3f") if l1 else "no closed form")
        cells.append(str(len(exact)) + " / " + str(len(hutch)))
        rows.append(cells)
    header = [
        "target",
        "NLL exact",
        "NLL Hutchinson",
        "Hutchinson - exact (95 % CI)",
        "NFE/step exact",
        "NFE/step Hutch.",
        "test NFE",
        "train s exact",
        "train s Hutch.",
        "density L1 (exact)",
        "n",
    ]
    lines += [markdown_table(header, rows), ""]
    if verdicts:
        lines += [
            "The likelihood cost of Hutchinson's estimator in training, as measured:",
            "",
            *verdicts,
            "",
        ]
    tiles = []
    for target in targets:
        runs = sorted(groups.get((target, "exact"), []), key=lambda j: (len(_seed(j)), _seed(j)))
        if runs:
            nll = runs[0].metrics.get("test/nll", math.nan)
            tiles.append((f"{target}, seed {_seed(runs[0])}: NLL {nll:.3f}", _density_png(runs[0])))
    if tiles:
        path = _tile(
            tiles,
            4,
            report_dir / "targets_density.png",
            "True density (or data histogram) and learned density, exact-trace training",
        )
        lines += [_figure_line(report_dir, path, "true and learned densities"), ""]
    return lines


# --- planar K vs CNF M ----------------------------------------------------------------------


def _capacity_model(job: JobResult) -> tuple[str, int]:
    o = job.overrides
    if o.get("experiment") == "planar_flow":
        return "planar", int(o["model.flow.layers"])
    units = o.get("model.flow.field.units") or _select(run_config(job), "model.flow.field.units")
    return "CNF", int(units)


def capacity_section(jobs: list[JobResult], report_dir: Path) -> list[str]:
    groups: dict[tuple[str, tuple[str, int]], list[JobResult]] = defaultdict(list)
    for job in jobs:
        groups[_target(job), _capacity_model(job)].append(job)
    targets = _ordered({t for t, _ in groups})
    models = sorted({m for _, m in groups}, key=lambda m: (m[0] != "planar", m[1]))
    cnf_job = next((j for j in jobs if j.overrides.get("experiment") == "cnf_fast"), None)
    lines = [
        "## Planar flow (K layers) vs CNF (M hidden units), Chen et al. 2018 Figure 4",
        "",
        "Claim: the CNF fits multimodal targets that the planar flow cannot. Both at the fast "
        f"recipe's budget ({_steps_text(cnf_job) if cnf_job else 'n/a'}); the CNF is the seed "
        "paper's hyper-network field, trained like `experiment=cnf_fast`. Test NLL in nats.",
        "",
    ]
    header = ["target", *[f"{kind} {'K' if kind == 'planar' else 'M'}={n}" for kind, n in models]]
    rows = [
        [
            t,
            *[
                fmt_mean_std(_values(groups.get((t, m), []), _metric("test/nll")), spec=".3f")
                for m in models
            ],
        ]
        for t in targets
    ]
    lines += [markdown_table(header, rows), ""]
    for target in targets:
        cnf, planar = (
            groups.get((target, ("CNF", 64)), []),
            groups.get((target, ("planar", 64)), []),
        )
        if cnf and planar:
            c = compare_jobs(
                cnf,
                planar,
                "test/nll",
                a_name="CNF M=64",
                b_name="planar K=64",
                metric=f"test NLL on {target}",
                higher_is_better=False,
            )
            lines.append(f"- {c.verdict}")
    lines.append("")
    tiles = []
    for target in targets:
        for model in models:
            runs = sorted(groups.get((target, model), []), key=lambda j: (len(_seed(j)), _seed(j)))
            kind, n = model
            label = f"{kind} {'K' if kind == 'planar' else 'M'}={n}"
            if runs:
                nll = runs[0].metrics.get("test/nll", math.nan)
                caption = f"{target}, {label}, seed {_seed(runs[0])}: NLL {nll:.2f}"
                tiles.append((caption, _density_png(runs[0])))
            else:
                tiles.append((f"{target}, {label}: no run", None))
    if tiles:
        path = _tile(
            tiles,
            len(models),
            report_dir / "capacity.png",
            "Planar K vs CNF M: true (left) and learned (right) density of each run",
        )
        lines += [_figure_line(report_dir, path, "planar K vs CNF M"), ""]
    return lines


# --- RNODE trade-off ------------------------------------------------------------------------


def rnode_section(jobs: list[JobResult], report_dir: Path) -> list[str]:
    groups: dict[tuple[str, bool, float], list[JobResult]] = defaultdict(list)
    for job in jobs:
        learn = bool(_select(run_config(job), "model.flow.learn_t_end"))
        groups[_target(job), learn, float(job.overrides["model.kinetic_weight"])].append(job)
    targets = _ordered({t for t, _, _ in groups})
    lines = [
        "## RNODE: function evaluations against likelihood",
        "",
        "FFJORD's recipe (`experiment=cnf_rnode`: adaptive dopri5 training at 1e-5, exact "
        "trace) with both RNODE weights set to lambda (kinetic energy and exact Jacobian "
        "Frobenius norm), the end time fixed at 1 or learned from 1. NFE/step: evaluations of "
        "the adaptive training solve per step, over the last epoch (the RNODE papers' cost "
        "axis; direct back-propagation adds none). Test NFE: evaluations of one dopri5 1e-5 "
        f"test solve of the trained flow. Matched NLL: within {MATCH_NATS} nats of lambda = 0 "
        "(seed means); each ratio is lambda = 0's NFE over the cheapest matched setting's, "
        "read off the fronts below.",
        "",
    ]
    rows = []
    for (target, learn, weight), runs in sorted(
        groups.items(), key=lambda kv: (targets.index(kv[0][0]), kv[0][1], kv[0][2])
    ):
        t_end = _values(runs, lambda j: _learned_t(j))
        rows.append(
            [
                target,
                "learned" if learn else "fixed",
                f"{weight:g}",
                fmt_mean_std(_values(runs, _metric("test/nll")), spec=".3f"),
                fmt_mean_std(_values(runs, _metric("test/nfe_forward")), spec=".0f"),
                fmt_mean_std(_values(runs, _metric("train/nfe_forward_epoch")), spec=".0f"),
                fmt_mean_std(t_end, spec=".2f") if t_end else "1",
                str(len(runs)),
            ]
        )
    header = ["target", "end time", "lambda", "test NLL", "test NFE", "NFE/step", "T", "n"]
    lines += [markdown_table(header, rows), "", "Read off the fronts:", ""]
    for target in targets:
        for learn in (False, True):
            settings = {
                w: runs for (t, l_, w), runs in groups.items() if t == target and l_ == learn
            }
            if 0.0 not in settings:
                continue
            for key, _ in NFE_AXES:
                lines.append(
                    f"- {target}, end time {'learned' if learn else 'fixed'}, "
                    + _matched_ratio(settings, target, key)
                )
    lines.append("")
    path = _rnode_figure(groups, targets, report_dir / "rnode_front.png")
    lines += [_figure_line(report_dir, path, "NFE against NLL"), ""]
    return lines


def _learned_t(job: JobResult) -> float | None:
    return job.metrics.get("train/t_end")


# The two NFE axes of the RNODE fronts: the training solve's evaluations per step (dopri5 at
# the training tolerance; direct back-propagation re-uses them) and one test solve's.
NFE_AXES = (
    ("train/nfe_forward_epoch", "NFE per training step"),
    ("test/nfe_forward", "test NFE (dopri5 1e-5)"),
)


def _matched_ratio(settings: dict[float, list[JobResult]], target: str, key: str) -> str:
    """lambda = 0's NFE over the cheapest setting whose NLL is within MATCH_NATS of it."""
    label = dict(NFE_AXES)[key]
    base = settings[0.0]
    base_nll = mean_std(_values(base, _metric("test/nll")))[0]
    base_nfe = mean_std(_values(base, _metric(key)))[0]
    matched = [
        (mean_std(_values(runs, _metric(key)))[0], w)
        for w, runs in settings.items()
        if w > 0
        and _values(runs, _metric(key))
        and mean_std(_values(runs, _metric("test/nll")))[0] <= base_nll + MATCH_NATS
    ]
    if not matched or math.isnan(base_nfe):
        return (
            f"no lambda > 0 reaches lambda = 0's NLL ({base_nll:.3f}) within {MATCH_NATS} nats "
            f"with a measured {label}; no ratio at matched NLL."
        )
    nfe, weight = min(matched)
    nfe_cmp = compare_jobs(
        settings[weight],
        base,
        key,
        a_name=f"lambda = {weight:g}",
        b_name="lambda = 0",
        metric=f"{label} on {target}",
        higher_is_better=False,
    )
    nll_cmp = compare_jobs(
        settings[weight],
        base,
        "test/nll",
        a_name=f"lambda = {weight:g}",
        b_name="lambda = 0",
        metric=f"test NLL on {target}",
        higher_is_better=False,
    )
    return (
        f"{label}: lambda = {weight:g} matches the NLL with {nfe:.0f} against {base_nfe:.0f}, "
        f"an NFE ratio of {base_nfe / nfe:.2f}. {nfe_cmp.verdict} {nll_cmp.verdict}"
    )


def _rnode_figure(
    groups: dict[tuple[str, bool, float], list[JobResult]], targets: list[str], path: Path
) -> Path:
    fig, axes = plt.subplots(
        len(NFE_AXES), len(targets), figsize=(4.5 * len(targets), 7.2), squeeze=False
    )
    for row, (key, label) in enumerate(NFE_AXES):
        for ax, target in zip(axes[row], targets, strict=True):
            for learn, marker in ((False, "o"), (True, "s")):
                points = sorted(
                    (
                        w,
                        mean_std(_values(r, _metric(key)))[0],
                        mean_std(_values(r, _metric("test/nll")))[0],
                    )
                    for (t, l_, w), r in groups.items()
                    if t == target and l_ == learn
                )
                if not points:
                    continue
                ax.plot(
                    [p[1] for p in points],
                    [p[2] for p in points],
                    marker=marker,
                    ls="-",
                    label=f"end time {'learned' if learn else 'fixed'}",
                )
                for w, x, y in points:
                    ax.annotate(
                        f"{w:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                    )
            ax.set_xlabel(label)
            ax.set_ylabel("test NLL (nats)")
            ax.set_title(f"{target} (labels: lambda)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the adjoint seminorm ---------------------------------------------------------------------


def seminorm_section(jobs: list[JobResult]) -> list[str]:
    groups: dict[tuple[str, bool], list[JobResult]] = defaultdict(list)
    for job in jobs:
        on = job.overrides["sensitivity.seminorm"].lower() == "true"
        groups[_target(job), on].append(job)
    targets = _ordered({t for t, _ in groups})
    lines = [
        "## Adjoint seminorm: backward NFE at equal likelihood",
        "",
        f"`experiment=cnf_ffjord` with the adjoint, {_steps_text(jobs[0])}, the seminorm "
        "(Kidger et al. 2021) off and on; backward NFE per training step over the last epoch.",
        "",
    ]
    rows, verdicts = [], []
    for target in targets:
        off, on = groups.get((target, False), []), groups.get((target, True), [])
        rows.append(
            [
                target,
                fmt_mean_std(_values(off, _metric("train/nfe_backward_epoch")), spec=".0f"),
                fmt_mean_std(_values(on, _metric("train/nfe_backward_epoch")), spec=".0f"),
                fmt_mean_std(_values(off, _metric("test/nll")), spec=".3f"),
                fmt_mean_std(_values(on, _metric("test/nll")), spec=".3f"),
                f"{len(off)} / {len(on)}",
            ]
        )
        if off and on:
            for key, metric in (
                ("train/nfe_backward_epoch", "backward NFE per step"),
                ("test/nll", "test NLL"),
            ):
                c = compare_jobs(
                    on,
                    off,
                    key,
                    a_name="the seminorm",
                    b_name="the full norm",
                    metric=f"{metric} on {target}",
                    higher_is_better=False,
                )
                verdicts.append(f"- {c.verdict}")
    header = ["target", "bwd NFE full", "bwd NFE seminorm", "NLL full", "NLL seminorm", "n"]
    return [*lines, markdown_table(header, rows), "", *verdicts, ""]


def _weights_label(row: dict) -> str:
    """Which trained weights a same-weights row used, in words."""
    label = f"{row['experiment']}, {row['train_steps']:,} steps"
    if row.get("kinetic_weight"):
        label += f", lambda {row['kinetic_weight']:g}"
    if row.get("trained_sensitivity") == "adjoint":
        label += ", trained with the adjoint" + (
            " (seminorm)" if row.get("trained_with_seminorm") else ""
        )
    return label


def seminorm_weights_section(rows_in: list[dict]) -> list[str]:
    """The seminorm and the full adjoint norm on the same trained weights and batches."""
    if not rows_in:
        return []
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows_in:
        groups[row["target"], _weights_label(row)].append(row)
    batches = sorted({len(r["batches"]) for r in rows_in})
    sizes = sorted({r["batch_size"] for r in rows_in})
    lines = [
        "### The same weights, both norms (`experiments/bench_cnf.py --part seminorm`)",
        "",
        "Every trained flow above that trained with dopri5 computes its training gradient by "
        f"the adjoint (at its solver's tolerances) on {', '.join(map(str, batches))} test "
        f"batches of {', '.join(map(str, sizes))} points, once with the full adjoint norm and "
        "once with the seminorm: same weights and batches, so the same forward solve and NLL; "
        "only the backward step control differs. Backward NFE per gradient (mean over runs of "
        "the mean over batches); identical gradients: runs whose two gradients agree exactly "
        "(the seminorm accepted the same steps).",
        "",
    ]
    table = []
    order = _ordered({t for t, _ in groups})
    for (target, label), rows in sorted(
        groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])
    ):
        full = [r["nfe_backward_full"] for r in rows]
        semi = [r["nfe_backward_seminorm"] for r in rows]
        saving = 1 - sum(semi) / sum(full)
        table.append(
            [
                target,
                label,
                str(len(rows)),
                fmt_mean_std(full, spec=".1f"),
                fmt_mean_std(semi, spec=".1f"),
                f"{100 * saving:.1f} %",
                f"{sum(r['grad_rel_diff'] == 0 for r in rows)} / {len(rows)}",
                f"{max(r['grad_rel_diff'] for r in rows):.2g}",
            ]
        )
    header = [
        "target",
        "weights",
        "runs",
        "bwd NFE full",
        "bwd NFE seminorm",
        "saving",
        "identical gradients",
        "largest gradient distance",
    ]
    lines += [markdown_table(header, table), ""]
    for target in _ordered({r["target"] for r in rows_in}):
        rows = [r for r in rows_in if r["target"] == target]
        c = compare(
            [r["nfe_backward_seminorm"] for r in rows],
            [r["nfe_backward_full"] for r in rows],
            a_name="the seminorm",
            b_name="the full norm",
            metric=f"backward NFE on the same weights on {target}",
            higher_is_better=False,
        )
        same = sum(r["grad_rel_diff"] == 0 for r in rows)
        lines.append(
            f"- {c.verdict} Identical gradients in {same} of {len(rows)} runs"
            + (
                " (in those, the parameters' adjoint never decided a backward step)."
                if same
                else "."
            )
        )
    return [*lines, ""]


# --- the recipes benchmark -------------------------------------------------------------------


def recipes_section(bench: dict, report_dir: Path) -> list[str]:
    rows_in = bench.get("recipes", [])
    margin = bench.get("margin", MATCH_NATS)
    lines = [
        "## Time to the FFJORD recipe's likelihood (`experiments/bench_cnf.py --part recipes`)",
        "",
        "`experiment=cnf_ffjord` (dopri5 1e-5 training, 10,000 steps of batch 100, learned end "
        "time) and `experiment=cnf_fast` trained side by side on each target (two processes, one "
        "thread each, at the same time, so they share the machine's load alike; other jobs may "
        f"run beside them). Threshold: the reference's final validation NLL + {margin} nats; time: "
        "cumulative training-step seconds at the first epoch whose validation NLL (dopri5 1e-5, "
        "exact trace) is at or below it. Target: at least "
        f"{SPEEDUP_TARGET:g}x sooner.",
        "",
    ]
    rows = []
    for r in rows_in:
        ref, fast = r["ffjord"], r["fast"]
        speedup = r.get("speedup")
        met = (
            "n/a"
            if speedup is None
            else ("yes" if speedup >= SPEEDUP_TARGET else f"**no** ({speedup:.2f}x)")
        )
        rows.append(
            [
                r["target"],
                f"{r['threshold_val_nll']:.3f}",
                _seconds(r.get("ffjord_seconds_to_threshold")),
                _seconds(r.get("fast_seconds_to_threshold")),
                "not reached" if speedup is None else f"{speedup:.2f}",
                _ratio(r.get("speedup_vs_full_reference")),
                f"{ref['test_nll']:.3f} / {fast['test_nll']:.3f}",
                f"{r['test_nll_gap']:+.3f}",
                f"{ref['steps']} / {fast['steps']}",
                f"{ref['nfe_per_step']:.0f} / {fast['nfe_per_step']:.0f}",
                met,
            ]
        )
    header = [
        "target",
        "threshold (val NLL)",
        "FFJORD s",
        "fast s",
        "speedup",
        "FFJORD total / fast",
        "test NLL FFJORD / fast",
        "fast - FFJORD",
        "steps",
        "NFE/step (last epoch)",
        f">= {SPEEDUP_TARGET:g}x",
    ]
    lines += [markdown_table(header, rows), ""]
    speedups = {r["target"]: r.get("speedup") for r in rows_in}
    if speedups:
        met = [t for t, v in speedups.items() if v is not None and v >= SPEEDUP_TARGET]
        missed = [t for t in speedups if t not in met]
        if not missed:
            lines.append(
                f"The fast recipe reached the reference's likelihood at least {SPEEDUP_TARGET:g}x "
                f"sooner on every target measured ({', '.join(met)}), one seed each."
            )
        else:
            lines.append(
                f"The fast recipe did not reach the reference's likelihood {SPEEDUP_TARGET:g}x "
                f"sooner on {', '.join(missed)}"
                + (f"; it did on {', '.join(met)}." if met else ".")
            )
        lines.append("")
    if rows_in:
        path = _recipes_figure(rows_in, report_dir / "recipes_curves.png")
        lines += [_figure_line(report_dir, path, "validation NLL against training time"), ""]
    return lines


def _seconds(value: float | None) -> str:
    if value is None:
        return "not reached"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _recipes_figure(rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 3.4), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        for recipe, style in (("ffjord", "-"), ("fast", "--")):
            curve = row[recipe]["curve"]
            ax.plot(
                [max(c["train_seconds"], 1e-3) for c in curve],
                [c["val_nll"] for c in curve],
                style,
                marker=".",
                label=recipe,
            )
        ax.axhline(row["threshold_val_nll"], color="k", lw=0.7, ls=":", label="threshold")
        ax.set_xscale("log")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("validation NLL (nats)")
        ax.set_title(row["target"])
        low = min(c["val_nll"] for r in ("ffjord", "fast") for c in row[r]["curve"])
        ax.set_ylim(low - 0.1, low + 1.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the report ------------------------------------------------------------------------------


def build_cpu_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    done = [j for j in jobs if j.ok]
    failed = [j for j in jobs if not j.ok]
    by_study: dict[str, list[JobResult]] = defaultdict(list)
    for job in done:
        by_study[study(job)].append(job)
    benches = [
        text
        for key, text in (
            ("bench_cnf_recipes", "the recipes benchmark"),
            ("bench_cnf_seminorm", "the seminorm benchmark"),
        )
        if key in jobs.bench
    ]
    lines = [
        "# Continuous normalizing flows at the FFJORD standard (reproduction report)",
        "",
        f"Written by `make reproduce-cnf budget={budget}` from the records listed at the end.",
        "",
        f"- Budget: `{budget}`; {len(done)} runs finished, {len(failed)} failed"
        + (f", plus {' and '.join(benches)}." if benches else "."),
        f"- Device: {device_label(done, _bench_devices(jobs.bench))}.",
        "",
    ]
    if by_study.get("selection"):
        lines += selection_section(by_study["selection"])
    if by_study.get("targets"):
        lines += targets_section(by_study["targets"], report_dir)
    if by_study.get("capacity"):
        lines += capacity_section(by_study["capacity"], report_dir)
    if by_study.get("rnode"):
        lines += rnode_section(by_study["rnode"], report_dir)
    if by_study.get("seminorm"):
        lines += seminorm_section(by_study["seminorm"])
    if jobs.bench.get("bench_cnf_seminorm", {}).get("seminorm"):
        if not by_study.get("seminorm"):
            lines += ["## Adjoint seminorm: backward NFE at equal likelihood", ""]
        lines += seminorm_weights_section(jobs.bench["bench_cnf_seminorm"]["seminorm"])
    if "bench_cnf_recipes" in jobs.bench:
        lines += recipes_section(jobs.bench["bench_cnf_recipes"], report_dir)
    lines += [
        "## What differs from the papers",
        "",
        "- FFJORD and RNODE show the toy densities as figures; neither prints an NLL table for "
        "them, so the numbers here have no published counterpart to disagree with.",
        *(
            [
                f"- Seeds: {_seed_counts(done)} per setting (sized for 2 CPU cores); intervals "
                "over 2 seeds are wide, and a comparison without an interval says so."
            ]
            if done
            else []
        ),
        *(
            [
                "- The recipes benchmark trains each recipe once per target (seed 0): a timing, "
                "not a comparison over seeds."
            ]
            if "bench_cnf_recipes" in jobs.bench
            else []
        ),
        *(
            [
                "- The RNODE papers report their NFE savings on MNIST and CIFAR-10 (and train "
                "with the adjoint); here the trade-off is measured on two 2D targets with direct "
                "back-propagation, 4000 steps of batch 100."
            ]
            if by_study.get("rnode")
            else []
        ),
        *(
            [
                "- Kidger et al. (2021) measure the seminorm's saving on larger systems (CNFs on "
                "image data among them); here it is measured on 2D flows, where the table above "
                "shows how often the parameters' adjoint limits a backward step at all."
            ]
            if jobs.bench.get("bench_cnf_seminorm", {}).get("seminorm")
            else []
        ),
        *(
            [
                "- The reference recipe back-propagates through dopri5 (FFJORD uses the "
                "adjoint): faster for a 2D state on a CPU, so the reference is timed at its "
                "quicker setting."
            ]
            if "bench_cnf_recipes" in jobs.bench
            else []
        ),
        *(
            [
                "- Targets and capacity train with the fast recipe (steps and batch in their "
                "recipe lines), not FFJORD's 10,000 steps of batch 100; the recipes benchmark "
                "times the two."
            ]
            if by_study.get("targets") or by_study.get("capacity")
            else []
        ),
        "",
    ]
    labels = [
        (f"{study(j)}, {_target(j)}, seed {_seed(j)}, {_describe(j)}", j.output_dir) for j in done
    ]
    return "\n".join(lines + runs_section(labels, failed))


def _seed_counts(jobs: list[JobResult]) -> str:
    """How many seeds each setting ran ("2", or "1-2" when they differ)."""
    settings: dict[tuple, set[str]] = defaultdict(set)
    for job in jobs:
        setting = tuple(sorted((k, v) for k, v in job.overrides.items() if k != "seed"))
        settings[setting].add(_seed(job))
    counts = sorted({len(seeds) for seeds in settings.values()}) or [0]
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _bench_devices(bench: dict) -> list[dict]:
    """The device records of the recipes benchmark's runs and of the seminorm benchmark."""
    rows = bench.get("bench_cnf_recipes", {}).get("recipes", [])
    devices = [r[k]["device"] for r in rows for k in ("ffjord", "fast") if r[k].get("device")]
    seminorm = bench.get("bench_cnf_seminorm", {}).get("seminorm_device")
    return devices + ([seminorm] if seminorm else [])


def _describe(job: JobResult) -> str:
    keys = (
        "solver.step_size",
        "trainer.max_epochs",
        "trace",
        "model.flow.layers",
        "model.flow.field.units",
        "model.kinetic_weight",
        "model.flow.learn_t_end",
        "sensitivity.seminorm",
    )
    parts = [f"{k}={job.overrides[k]}" for k in keys if k in job.overrides]
    return job.overrides.get("experiment", "?") + (" " + " ".join(parts) if parts else "")


__all__ = ["build_cpu_report", "nfe_per_step", "study"]
