"""Table 1 of Chen et al. 2018 from run folders: one row per model, beside the paper.

Used by the MNIST reproduction (`make reproduce-mnist`) and by
`experiments/mnist_report.py`, which adds the memory and tolerance studies.
"""

from __future__ import annotations

import math
from pathlib import Path

from odelab.ode.config import ADAPTIVE_METHODS
from odelab.reports.stats import resolvable
from odelab.runs import Run, median

ORDER = ["1-layer MLP", "ResNet", "RK-Net", "ODE-Net"]
# Chen et al. 2018, Table 1 (full MNIST, 160 epochs).
PAPER = {
    "1-layer MLP": {"error": "1.60 %", "params": "0.24 M", "memory": "–", "time": "–"},
    "ResNet": {"error": "0.41 %", "params": "0.60 M", "memory": "O(L)", "time": "O(L)"},
    "RK-Net": {"error": "0.47 %", "params": "0.22 M", "memory": "O(L~)", "time": "O(L~)"},
    "ODE-Net": {"error": "0.42 %", "params": "0.22 M", "memory": "O(1)", "time": "O(L~)"},
}
NETS = {"ResNet": "ResNet", "MLPClassifier": "1-layer MLP"}


def model_label(run: Run) -> str:
    """Table 1 row of a run, from its net class and solver."""
    net = str(run.config.model.net._target_).rsplit(".", 1)[-1]
    if net == "ODENet":
        return "ODE-Net" if run.config.solver.method in ADAPTIVE_METHODS else "RK-Net"
    return NETS.get(net, net)


def data_sizes(run: Run) -> tuple[str, int, int]:
    """Dataset label, training images and test images the run actually used."""
    data, trainer = run.config.data, run.config.trainer
    if data.offline_test_split:
        name = f"{data.dataset} test-set split"
        train, test = 10_000 - data.val_size - data.test_size, data.test_size
    else:
        name = data.dataset
        train, test = 60_000 - data.val_size, 10_000
    if data.get("train_subset"):
        train = min(train, int(data.train_subset))
    limit = trainer.get("limit_test_batches")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
        test = min(test, limit * int(data.eval_batch_size))
    elif isinstance(limit, float) and limit <= 1.0:
        test = int(test * limit)
    return name, train, test


def device_label(run: Run) -> str:
    if run.device:
        kind = "GPU" if run.device["type"] == "cuda" else f"CPU x{run.device.get('torch_threads')}"
        return f"{kind} ({run.device['name']})"
    return str(run.config.trainer.accelerator)


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{spec}}{unit}"


def summarize(run: Run) -> dict[str, str]:
    label = model_label(run)
    dataset, n_train, n_test = data_sizes(run)
    _, step_times = run.series("train/step_time")
    _, nfe_f = run.series("train/nfe_forward")
    _, nfe_b = run.series("train/nfe_backward")
    error = run.last("test/error")
    params = run.last("model/params")
    nfe = "–"
    if nfe_f:
        nfe = f"{sum(nfe_f) / len(nfe_f):.1f} / {sum(nfe_b) / len(nfe_b):.1f}" if nfe_b else "n/a"
    test_nfe = run.last("test/nfe_forward")
    return {
        "model": label,
        "error": fmt(None if error is None else 100 * error, ".2f", " %"),
        "paper_error": PAPER.get(label, {}).get("error", "–"),
        "params": fmt(None if params is None else params / 1e6, ".3f", " M"),
        "paper_params": PAPER.get(label, {}).get("params", "–"),
        "memory": fmt(run.last("train/peak_memory_mb"), ".1f", " MiB"),
        "activations": fmt(run.last("train/activations_mb"), ".1f", " MiB"),
        "paper_memory": PAPER.get(label, {}).get("memory", "–"),
        "step_time": fmt(median(step_times), ".3f", " s"),
        "epoch_time": fmt(run.last("train/epoch_time"), ".1f", " s"),
        "paper_time": PAPER.get(label, {}).get("time", "–"),
        "nfe": nfe,
        "test_nfe": "–" if test_nfe is None else f"{test_nfe:.0f}",
        "data": f"{dataset}, {n_train} train / {n_test} test",
        "epochs": f"{run.epochs} ({run.train_steps} steps of {run.config.data.batch_size})",
        "solve": solve_label(run),
        "device": device_label(run),
        "train_loss": fmt(run.last("train/loss_epoch"), ".2f"),
        "path": str(run.path),
    }


def solve_label(run: Run) -> str:
    if str(run.config.model.net._target_).rsplit(".", 1)[-1] != "ODENet":
        return "–"
    solver, sens = run.config.solver, run.config.sensitivity.method
    if solver.method in ADAPTIVE_METHODS:
        return f"{solver.method} tol {solver.rtol:g}, {sens}"
    return f"{solver.method} step {solver.step_size}, {sens}"


def nfe_figure(run: Run, path: Path) -> bool:
    """Figure 3 of the paper from one ODE-Net run: forward and backward NFE per training step."""
    steps_f, nfe_f = run.series("train/nfe_forward")
    steps_b, nfe_b = run.series("train/nfe_backward")
    if not nfe_f:
        return False
    from odelab.plotting import plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(steps_f, nfe_f, ".-", label="forward NFE")
    if nfe_b:
        ax.plot(steps_b, nfe_b, ".-", label="backward NFE (adjoint)")
    ax.set_xlabel("training step")
    ax.set_ylabel("NFE per step")
    ax.set_ylim(bottom=0)
    ax.set_title(f"ODE-Net NFE over training ({solve_label(run)})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# A model has reached its plateau when its validation error over the last quarter of
# epochs is no more than this much (relative) below its best before that quarter.
PLATEAU_TOLERANCE = 0.05


def plateau(epochs: list[int], values: list[float]) -> tuple[float, bool] | None:
    """(relative improvement in the last quarter of epochs, whether that is a plateau)."""
    if len(values) < 4:
        return None
    cut = len(values) - max(1, len(values) // 4)
    before, last = min(values[:cut]), min(values[cut:])
    gain = (before - last) / before if before > 0 else 0.0
    return gain, gain <= PLATEAU_TOLERANCE


def plateau_state(
    epochs: list[int], values: list[float], images: int | None = None
) -> tuple[str, str]:
    """('plateau' | 'improving' | 'unresolved' | 'unknown', the words for the report).

    'unresolved': the last quarter gained more than the relative tolerance, but by fewer
    validation images (of `images`) than could be significant (so neither a plateau nor an
    improvement is shown).
    """
    found = plateau(epochs, values)
    if found is None:
        return "unknown", "too few epochs to tell"
    gain, flat = found
    if flat and gain < 0:
        return "plateau", (
            f"plateau (no gain: the last quarter's best error {100 * -gain:.1f} % above the "
            "best before)"
        )
    if flat:
        return "plateau", f"plateau (last quarter {100 * gain:.1f} %)"
    cut = len(values) - max(1, len(values) // 4)
    before, last = min(values[:cut]), min(values[cut:])
    if images:
        fewer = round(images * (before - last))
        if not resolvable(fewer):
            return "unresolved", (
                f"improving by {fewer} error{'' if fewer == 1 else 's'} of {images} "
                "validation images, not significant "
                f"(last quarter {100 * gain:.1f} %)"
            )
    return "improving", f"still improving (last quarter {100 * gain:.1f} %)"


def validation_images(run: Run) -> int | None:
    """How many images a run validated on (`data.val_size`), where its config says."""
    size = run.config.get("data", {}).get("val_size") if run.config is not None else None
    return int(size) if size else None


def validation_figure(curves: dict[str, list[tuple[list[int], list[float]]]], path: Path) -> bool:
    """Validation error (%) against epoch, one line per model and seed."""
    if not any(epochs for runs in curves.values() for epochs, _ in runs):
        return False
    from odelab.plotting import plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (model, runs) in enumerate(curves.items()):
        for j, (epochs, values) in enumerate(runs):
            ax.plot(
                epochs,
                [100 * v for v in values],
                ".-",
                color=f"C{i}",
                label=model if j == 0 else None,
                alpha=0.8,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_yscale("log")
    ax.set_title("Validation error over training (one line per seed)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def validation_section(
    curves: dict[str, list[tuple[list[int], list[float], int | None]]],
    figure: Path,
    heading: str = "## Validation error over training",
) -> list[str]:
    """Validation curves (one figure) and, per model and seed, whether the last quarter of
    epochs still improved; `curves` holds per model (epochs, validation error, validation
    images) per run. The figure is written to `figure`, linked relative to the report."""
    figure.parent.mkdir(parents=True, exist_ok=True)
    if not validation_figure(
        {m: [(e, v) for e, v, _ in runs] for m, runs in curves.items()}, figure
    ):
        return ["Validation was off in this budget: no plateau can be shown.", ""]
    lines = [heading, ""]
    for model, runs in curves.items():
        states = [plateau_state(epochs, values, images)[1] for epochs, values, images in runs]
        lines.append(f"- {model}: " + "; ".join(states) + ".")
    lines += [
        "",
        f"A run counts as plateaued when its best validation error in the last quarter of its "
        f"epochs is at most {100 * PLATEAU_TOLERANCE:.0f} % (relative) below its best before "
        "(the percentage shown); a larger gain is not significant when it is so few errors "
        "fewer (net, on the validation images) that even with every changed image a fix the "
        "exact two-sided sign test could not reach p < 0.05 "
        f"({next(d for d in range(1, 64) if resolvable(d)) - 1} or fewer).",
        "",
        f"![validation error]({figure.parent.name}/{figure.name})",
        "",
    ]
    return lines


def memory_section(memory: dict, image: str | None) -> list[str]:
    lines = [
        "## Memory: adjoint vs direct over the integration horizon",
        "",
        (
            f"One ODE-Net training step (forward, cross-entropy, backward), batch "
            f"{memory['batch_size']}, {memory['channels']} channels, {memory['weights']}, inputs: "
            f"{memory['inputs']}; device: {memory['device']['type']} ({memory['device']['name']}). "
            f"Peak memory = {memory['measure']}; saved activations = the most bytes autograd held "
            "at once in tensors saved for backward."
        ),
        "",
        "| solver | sensitivity | T | NFE fwd / bwd | peak memory (MiB) | saved activations (MiB) "
        "| time (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in memory["rows"]:
        lines.append(
            f"| {r['solver']} | {r['sensitivity']} | {r['T']:g} | {r['nfe_forward']} / "
            f"{r['nfe_backward']} "
            f"| {r['peak_mb']:.2f} | {r['saved_activations_mb']:.2f} | {r['step_time_s']:.1f} |"
        )
    lines += [
        "",
        "| solver | adjoint peak max/min over T (claim: <= 1.2) | direct peak at the longest / "
        "shortest T (claim T=8 / T=1: >= 3) |",
        "|---|---:|---:|",
    ]
    for solver, r in memory["ratios"].items():
        lines.append(
            f"| {solver} | {r.get('adjoint_max_over_min', math.nan):.3f} "
            f"| {r.get('direct_last_over_first', math.nan):.2f} |"
        )
    lines += [
        "",
        (
            "Direct back-propagation stores every evaluation, so its peak grows with the "
            "forward NFE, not with T as such; the adjoint's stays at one evaluation's worth:"
        ),
    ]
    for solver in memory["ratios"]:
        slope = _nfe_slope(
            [r for r in memory["rows"] if r["solver"] == solver and r["sensitivity"] == "direct"]
        )
        nfe = sorted(r["nfe_forward"] for r in memory["rows"] if r["solver"] == solver)
        lines.append(
            f"- {solver}: direct adds {slope:.3f} MiB per forward evaluation "
            f"(least squares); forward NFE {nfe[0]} to {nfe[-1]} over the horizons."
        )
    if image:
        lines += ["", f"![peak memory vs horizon]({image})"]
    return lines + [""]


def _nfe_slope(rows: list[dict]) -> float:
    """Least-squares slope of peak memory (MiB) against forward NFE."""
    if len(rows) < 2:
        return math.nan
    xs = [r["nfe_forward"] for r in rows]
    ys = [r["peak_mb"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False)) / var if var else math.nan


def memory_figure(rows: list[dict], path: Path, title: str) -> None:
    """Peak memory of one training step against the horizon, adjoint vs direct, per solver."""
    from odelab.plotting import plt

    solvers = sorted({r["solver"] for r in rows})
    fig, axes = plt.subplots(1, len(solvers), figsize=(5.2 * len(solvers), 4), squeeze=False)
    for ax, solver in zip(axes[0], solvers, strict=False):
        for sens, style in (("direct", "o-"), ("adjoint", "s-")):
            picked = sorted(
                (r for r in rows if r["solver"] == solver and r["sensitivity"] == sens),
                key=lambda r: r["T"],
            )
            ts = [r["T"] for r in picked]
            ax.plot(ts, [r["peak_mb"] for r in picked], style, label=sens)
            for r in picked:
                ax.annotate(
                    f"{r['nfe_forward']}",
                    (r["T"], r["peak_mb"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 4),
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("integration horizon T")
        ax.set_ylabel("peak memory of one training step (MiB)")
        ax.set_title(f"{solver} (labels: forward NFE)")
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tolerance_figure(rows: list[dict], path: Path, title: str) -> None:
    """Test error, NFE and time against the solver tolerance of one trained ODE-Net."""
    from odelab.plotting import plt

    tols = [r["tol"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(tols, [100 * r["test_error"] for r in rows], "o-")
    axes[0].set_ylabel("test error (%)")
    axes[1].plot(tols, [r["train_nfe_forward"] for r in rows], "o-", label="forward (train step)")
    axes[1].plot(tols, [r["train_nfe_backward"] for r in rows], "s-", label="backward (adjoint)")
    axes[1].plot(tols, [r["test_nfe_forward"] for r in rows], "^--", label="forward (test)")
    axes[1].set_ylabel("NFE")
    axes[1].legend(fontsize=8)
    axes[2].plot(tols, [r["train_step_seconds"] for r in rows], "o-", label="training step, wall")
    axes[2].plot(
        tols, [r["train_step_cpu_seconds"] for r in rows], "o--", label="training step, CPU"
    )
    axes[2].plot(tols, [r["test_seconds_per_batch"] for r in rows], "s-", label="test batch, wall")
    axes[2].plot(
        tols, [r["test_cpu_seconds_per_batch"] for r in rows], "s--", label="test batch, CPU"
    )
    axes[2].set_ylabel("seconds")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("rtol = atol")
        ax.invert_xaxis()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tolerance_section(tol: dict, image: str | None) -> list[str]:
    lines = [
        "## Tolerance trade-off",
        "",
        (
            f"The ODE-Net of `{tol['run']}` (trained at rtol = atol = {tol['trained_tol']:g}, "
            f"{tol['sensitivity']}) evaluated at each tolerance on the first {tol['test_images']} "
            f"images of its test split ({tol['data']}), test batches of {tol['eval_batch_size']}; "
            f"one training step (forward + backward, no update) on {tol['train_batch_size']} "
            f"training images, fastest of {tol.get('repeats', 1)}; fastest test batch; "
            f"device: {tol['device']['type']} ({tol['device']['name']})."
        ),
        "",
        (
            "| rtol = atol | test error | test NFE | s / test batch (wall, CPU) | train NFE fwd / "
            "bwd "
            "| s / train step (wall, CPU) |"
        ),
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in tol["rows"]:
        lines.append(
            f"| {r['tol']:.0e} | {100 * r['test_error']:.2f} % | {r['test_nfe_forward']:.0f} "
            f"| {r['test_seconds_per_batch']:.2f}, "
            f"{r.get('test_cpu_seconds_per_batch', math.nan):.2f} "
            f"| {r['train_nfe_forward']} / {r['train_nfe_backward']} "
            f"| {r['train_step_seconds']:.2f}, {r.get('train_step_cpu_seconds', math.nan):.2f} |"
        )
    if len({r["test_error"] for r in tol["rows"]}) == 1:
        lines += [
            "",
            (
                f"The test error is the same at every tolerance on these {tol['test_images']} "
                "images: over this range the solver's accuracy does not change the network's "
                "predictions; NFE and time are the informative columns here."
            ),
        ]
    if image:
        lines += ["", f"![tolerance trade-off]({image})"]
    return lines + [""]
