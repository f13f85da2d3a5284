"""Report for Table 1 of Chen et al. 2018: MLP, ResNet, RK-Net and ODE-Net on MNIST."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from omegaconf import OmegaConf

from odelab.reports.base import (
    JobResult,
    Jobs,
    Reproduction,
    by_seed,
    conf_budgets,
    device_label,
    fmt_mean_std,
    markdown_table,
    paired,
    runs_section,
)
from odelab.reports.mnist_table import (
    ORDER,
    PAPER,
    memory_figure,
    memory_section,
    model_label,
    nfe_figure,
    plateau_state,
    summarize,
    tolerance_figure,
    tolerance_section,
    validation_images,
    validation_section,
)
from odelab.reports.stats import compare
from odelab.runs import Run

BUDGETS, BENCHMARKS = conf_budgets("mnist")


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Table 1 (mean ± std of the error over seeds), the NFE figure and what differs."""
    runs = [j.run for j in jobs if j.ok]
    failed = [j for j in jobs if not j.ok]
    by_model: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_model[model_label(run)].append(run)
    models = sorted(by_model, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER))

    rows = []
    for model in models:
        group = by_model[model]
        first = summarize(group[0])
        errors = [100 * e for r in group if (e := r.last("test/error")) is not None]
        rows.append(
            [
                model,
                f"{fmt_mean_std(errors, spec='.2f')} %",
                PAPER.get(model, {}).get("error", "–"),
                first["params"],
                PAPER.get(model, {}).get("params", "–"),
                first["memory"],
                first["activations"],
                PAPER.get(model, {}).get("memory", "–"),
                first["step_time"],
                first["epoch_time"],
                PAPER.get(model, {}).get("time", "–"),
                first["nfe"],
                first["test_nfe"],
                first["solve"],
                str(len(group)),
            ]
        )
    header = [
        "model",
        "test error (mean ± std)",
        "paper",
        "params",
        "paper",
        "peak memory / step",
        "saved activations",
        "paper",
        "time / step (median)",
        "time / epoch",
        "paper",
        "NFE fwd / bwd per step",
        "test NFE",
        "solve",
        "seeds",
    ]
    data = summarize(runs[0])["data"] if runs else "n/a"
    epochs = summarize(runs[0])["epochs"] if runs else "n/a"
    lines = [
        "# ODE-Net on MNIST: Table 1 of Chen et al. 2018 (reproduction report)",
        "",
        f"Written by `make reproduce-mnist budget={budget}` from the runs listed at the end.",
        "Paper columns: Chen et al. 2018, Table 1 (full MNIST, 160 epochs).",
        "",
        f"- Budget: `{budget}`; {len(runs)} runs finished, {len(failed)} failed.",
        f"- Data: {data}; epochs: {epochs}.",
        f"- Device: {device_label(jobs)}.",
        "- Params, memory (one training step), time and NFE are from the first seed of each model.",
        "",
        markdown_table(header, rows),
        "",
    ]
    lines += _comparisons(jobs)
    curves = {
        m: [(*r.epoch_series("val/error"), validation_images(r)) for r in by_model[m]]
        for m in models
    }
    lines += validation_section(curves, report_dir / "validation.png")
    odenet = by_model.get("ODE-Net")
    if odenet:
        report_dir.mkdir(parents=True, exist_ok=True)
        figure = report_dir / "nfe.png"
        if nfe_figure(odenet[0], figure):
            _, forward = odenet[0].series("train/nfe_forward")
            _, backward = odenet[0].series("train/nfe_backward")
            ratio = sum(backward) / sum(forward) if backward and sum(forward) else float("nan")
            lines += [
                "## NFE over training (Figure 3)",
                "",
                (
                    "Mean forward NFE per step in each quarter of training: "
                    f"{_quarter_means(forward)}; "
                    f"backward / forward over the run {ratio:.2f}. The paper shows forward NFE "
                    "growing during training and the adjoint's backward pass needing about half "
                    "of it."
                ),
                "",
                f"![NFE over training]({report_dir.name}/{figure.name})",
                "",
            ]
    # The memory study (experiments/mnist_memory.py) is a benchmark of the budget, run
    # on the same device after the sweeps; its record is bench/mnist_memory.json.
    memory = getattr(jobs, "bench", {}).get("mnist_memory")
    memory_here = memory is not None
    if memory is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        image = report_dir / "mnist_memory.png"
        memory_figure(
            memory["rows"],
            image,
            f"ODE-Net training step, batch {memory['batch_size']}, "
            f"{memory['device']['name']}: adjoint vs direct",
        )
        lines += memory_section(memory, f"{report_dir.name}/{image.name}")
    # Figure 3's tolerance trade-off, measured on the budget's trained ODE-Net.
    tolerance = getattr(jobs, "bench", {}).get("mnist_tolerance")
    if tolerance is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        image = report_dir / "mnist_tolerance.png"
        tolerance_figure(
            tolerance["rows"],
            image,
            f"ODE-Net trained at tol {tolerance['trained_tol']:g}, evaluated at each "
            f"tolerance ({tolerance['test_images']} test images)",
        )
        lines += tolerance_section(tolerance, f"{report_dir.name}/{image.name}")
    lines += _differences(runs, budget, memory_here=memory_here)
    labels = [(f"{model_label(r)}, seed {r.config.seed}", r.path) for r in runs]
    return "\n".join(lines + runs_section(labels, failed))


def _comparisons(jobs: Jobs) -> list[str]:
    """ODE-Net against each other row on test error, paired over seeds, with computed verdicts."""
    by_model: dict[str, list[JobResult]] = defaultdict(list)
    for job in jobs:
        if job.ok:
            by_model[model_label(job.run)].append(job)
    odenet = by_seed(by_model.get("ODE-Net", []), "test/error", 100)
    if not odenet:
        return []
    lines = ["## Comparisons (test error in %, paired over seeds)", ""]
    for other in ("ResNet", "RK-Net", "1-layer MLP"):
        a, b = paired(odenet, by_seed(by_model.get(other, []), "test/error", 100))
        if a:
            c = compare(
                a, b, a_name="ODE-Net", b_name=other, metric="test error", higher_is_better=False
            )
            caveat = _unsettled({m: [j.run for j in by_model[m]] for m in ("ODE-Net", other)})
            lines.append(f"- {c.verdict}{caveat}")
    return [*lines, ""]


def _unsettled(groups: dict[str, list[Run]]) -> str:
    """A caveat when a compared model did not reach a validation plateau (else '').

    A comparison with one model still improving is confounded by training length, so
    the verdict says so instead of standing alone.
    """
    improving, unknown = [], []
    for model, runs in groups.items():
        states = [
            plateau_state(*r.epoch_series("val/error"), validation_images(r))[0] for r in runs
        ]
        if "unknown" in states:
            unknown.append(model)
        elif "improving" in states:
            improving.append(model)
    parts = []
    if improving:
        parts.append(f"{' and '.join(improving)} still improving at the end of training")
    if unknown:
        parts.append(f"no validation plateau shown for {' and '.join(unknown)}")
    return f" Not settled: {'; '.join(parts)}." if parts else ""


def _quarter_means(values: list[float]) -> str:
    """Means of the four consecutive quarters of a series (fewer parts when it is short)."""
    parts = min(4, len(values))
    bounds = [round(i * len(values) / parts) for i in range(parts + 1)]
    means = [sum(values[a:b]) / (b - a) for a, b in pairwise(bounds)]
    return ", ".join(f"{m:.1f}" for m in means)


def _differences(runs: list[Run], budget: str, memory_here: bool = False) -> list[str]:
    notes = ["## What differs from the paper", ""]
    if budget != "paper":
        steps = max((r.train_steps for r in runs), default=0)
        notes.append(
            f"- Budget `{budget}`: {steps} training steps per model against the paper's 160 "
            "epochs of 60,000 images, so the errors sit above the paper's; only "
            "`budget=paper` is comparable."
        )
    if any(r.config.data.get("offline_test_split") for r in runs):
        notes.append(
            "- Data: the official MNIST test set split into train / val / test (the "
            "60k training set was not available), so every error is on a different test set."
        )
    if any(r.config.data.get("dataset") == "fashion_mnist" for r in runs):
        notes.append(
            "- Data: Fashion-MNIST, which the paper did not use; its columns are MNIST "
            "numbers, shown for the ordering of the models only."
        )
    if any(r.device.get("type") != "cuda" for r in runs):
        notes.append(
            "- Device: CPU; times are CPU wall clock and only comparable within this table."
        )
    epochs = {model_label(r): r.epochs for r in runs}
    if len(set(epochs.values())) > 1 or any(r.config.trainer.get("max_time") for r in runs):
        reached = ", ".join(f"{m} {e}" for m, e in epochs.items())
        notes.append(f"- Epochs completed (a time cap stops a run early): {reached}.")
    milestones = {
        tuple(r.config.model.scheduler.milestones) for r in runs if r.config.model.get("scheduler")
    }
    if milestones - {(60, 100, 140)}:
        schedules = "; ".join(", ".join(map(str, m)) for m in sorted(milestones))
        notes.append(f"- Learning rate x0.1 at epochs {schedules} instead of 60, 100, 140.")
    if any("joblib" in _launcher(r) for r in runs):
        where = (
            "on one GPU"
            if any(r.device.get("type") == "cuda" for r in runs)
            else f"on the CPU cores, {_threads(runs)} torch thread(s) each"
        )
        notes.append(
            f"- Several runs trained at the same time {where} (joblib launcher), so the "
            "times per step include that sharing."
        )
    notes.append(
        "- Memory: measured for one training step; the paper gives only its order."
        + ("" if memory_here else " This budget ran no memory study.")
    )
    return [*notes, ""]


def _threads(runs: list[Run]) -> str:
    """The torch thread counts the runs recorded, e.g. '1' or '1, 2'."""
    counts = sorted({str(r.device.get("torch_threads", "?")) for r in runs})
    return ", ".join(counts)


def _launcher(run: Run) -> str:
    """The Hydra launcher that ran this job (its `_target_`), or '' when not recorded."""
    hydra_file = run.path / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return ""
    return str(OmegaConf.load(hydra_file).hydra.launcher.get("_target_", ""))


MNIST = Reproduction(
    name="mnist",
    title="ODE-Net vs ResNet, RK-Net and MLP on MNIST (Chen et al. 2018, Table 1)",
    budgets=BUDGETS,
    build=build_report,
    benchmarks=BENCHMARKS,
)
