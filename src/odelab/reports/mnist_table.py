"""The pieces of the MNIST report (Chen et al. 2018, Table 1 and Figure 3) that are not the
report itself: a run's Table 1 row name and data sizes, the schemas of the memory and tolerance
benchmark records, the plateau test of a validation curve, and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from odelab.ode.config import ADAPTIVE_METHODS
from odelab.reports.stats import resolvable
from odelab.runs import Run

ORDER = ["1-layer MLP", "ResNet", "RK-Net", "ODE-Net"]
NETS = {"ResNet": "ResNet", "MLPClassifier": "1-layer MLP"}


@dataclass
class MemoryRow:
    """One training step of `experiments/mnist_memory.py` at one horizon."""

    solver: str
    sensitivity: str
    T: float
    nfe_forward: int
    nfe_backward: int
    peak_mb: float
    saved_activations_mb: float
    step_time_s: float
    cpu_allocations_mb: float | None = None
    cuda_peak_mb: float | None = None


@dataclass
class MemoryRecord:
    """`bench/mnist_memory.json`: adjoint vs direct peak memory over the horizon T."""

    device: dict
    batch_size: int
    channels: int
    weights: str
    inputs: str
    measure: str
    rows: list[MemoryRow]
    ratios: dict


@dataclass
class ToleranceRow:
    """One tolerance of `experiments/mnist_tolerance.py`."""

    tol: float
    test_error: float
    test_nfe_forward: float
    test_seconds_per_batch: float
    train_nfe_forward: int
    train_nfe_backward: int
    train_step_seconds: float
    test_cpu_seconds_per_batch: float | None = None
    train_step_cpu_seconds: float | None = None


@dataclass
class ToleranceRecord:
    """`bench/mnist_tolerance.json`: one trained ODE-Net evaluated at each tolerance."""

    run: str
    trained_tol: float
    sensitivity: str
    test_images: int
    eval_batch_size: int
    train_batch_size: int
    data: str
    device: dict
    rows: list[ToleranceRow]
    repeats: int = 1


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
