"""Report for the spiral dynamics recovery (Chen et al. 2018, torchdiffeq `ode_demo`)."""

from __future__ import annotations

from pathlib import Path

from odelab.reports.base import (
    RECORDED,
    JobResult,
    Reproduction,
    copy_plots,
    device_label,
    fmt_mean_std,
    markdown_table,
    relative_path,
    run_config,
)

# The reference recipe's figure, from conf/experiment/spiral.yaml: RMSprop 1e-3,
# batches of 20 windows of 10 steps, 2000 iterations.
REFERENCE_TRAJ_MAE = 0.28

METRICS = {
    "test/traj_mae": "mean abs trajectory error on [0, 25]",
    "test/extrap_mae": "mean abs error on (25, 30] (extrapolation)",
    "test/field_rel_err": "relative RMS error of the learned field",
    "test/nfe_forward": "function evaluations of one evaluation solve",
}

BUDGETS = {
    # Checks the pipeline: 3 seeds x 100 iterations, CSV logs only.
    "quick": [[
        "experiment=spiral",
        "seed=0,1,2",
        "trainer.max_epochs=2",
        "data.batches_per_epoch=50",
        *RECORDED,
    ]],
    # The experiment as configured (its own epochs and batches), 5 seeds.
    "paper": [[
        "experiment=spiral",
        "seed=0,1,2,3,4",
        *RECORDED,
    ]],
}


def _iterations(job: JobResult) -> str:
    cfg = run_config(job)
    if cfg is None:
        return "n/a (run config not found)"
    epochs, batches = cfg.trainer.max_epochs, cfg.data.batches_per_epoch
    return f"{epochs * batches} ({epochs} epochs x {batches} batches)"


def _recipe(job: JobResult) -> str:
    cfg = run_config(job)
    if cfg is None:
        return "n/a (run config not found)"
    model, solver = cfg.model, cfg.solver
    optimizer = model.optimizer._target_.rsplit(".", 1)[-1]
    tolerance = f"rtol={solver.rtol} atol={solver.atol}" if solver.get("rtol") else f"step {solver.step_size}"
    return (
        f"{optimizer} lr {model.optimizer.lr}, MLP 2-{model.field.hidden}-2 on "
        f"{'y^3' if model.field.input_transform == 'cube' else 'y'}, windows of {cfg.data.batch_time}, "
        f"{solver.method} {tolerance}, {cfg.sensitivity.method} gradients"
    )


def build_report(jobs: list[JobResult], budget: str, report_dir: Path) -> str:
    """Paper-vs-ours table (mean ± std over seeds), per-seed results and plots."""
    done = [j for j in jobs if j.ok]
    failed = [j for j in jobs if not j.ok]
    seeds = ", ".join(j.overrides.get("seed", "0") for j in done) or "none"
    lines = [
        "# Spiral dynamics recovery: reproduction report",
        "",
        "Chen et al. 2018 (Neural ODEs), torchdiffeq `examples/ode_demo.py`: learn the field of",
        "dy/dt = y^3 A from 1000 observations of one trajectory on [0, 25].",
        "",
        f"- Budget: `{budget}`; seeds: {seeds} ({len(failed)} failed).",
        f"- Iterations per run: {_iterations(done[0]) if done else 'n/a'}; the reference recipe uses 2000.",
        f"- Device: {device_label(done)}.",
        f"- Recipe (conf/experiment/spiral.yaml, as run): {_recipe(done[0]) if done else 'n/a'}.",
        "",
        "## Paper vs ours",
        "",
    ]
    rows = []
    for key, meaning in METRICS.items():
        ref = f"{REFERENCE_TRAJ_MAE:g} (reference recipe)" if key == "test/traj_mae" else "not reported"
        rows.append([f"`{key}`", meaning, ref, fmt_mean_std([j.metrics.get(key) for j in done])])
    lines += [markdown_table(["metric", "meaning", "reference", f"ours (mean ± std, n={len(done)})"], rows), ""]

    lines += ["## Per seed", ""]
    seed_rows = [
        [
            j.overrides.get("seed", "0"),
            *(f"{j.metrics.get(k, float('nan')):.4g}" for k in METRICS),
            "" if j.seconds is None else f"{j.seconds:.0f}",
            relative_path(j.output_dir),
        ]
        for j in done
    ]
    seed_rows += [
        [j.overrides.get("seed", "0"), *("failed" for _ in METRICS), "", relative_path(j.output_dir)] for j in failed
    ]
    lines += [markdown_table(["seed", *METRICS, "seconds", "run dir"], seed_rows), ""]

    plots = copy_plots(done[0], report_dir) if done else []
    if plots:
        lines += [f"## Plots (seed {done[0].overrides.get('seed', '0')})", ""]
        lines += [f"![{p.stem}]({report_dir.name}/{p.name})" for p in plots]
        lines.append("")
    lines += [
        "## What differs from the reference",
        "",
        "- Optimizer: Adam lr 1e-2 instead of RMSprop 1e-3 (see conf/experiment/spiral.yaml).",
        "- The `quick` budget trains for a small fraction of the reference iterations; only",
        "  `paper` is comparable.",
        "",
    ]
    return "\n".join(lines)


SPIRAL = Reproduction(
    name="spiral",
    title="Spiral dynamics recovery (Chen et al. 2018, torchdiffeq ode_demo)",
    budgets=BUDGETS,
    build=build_report,
)
