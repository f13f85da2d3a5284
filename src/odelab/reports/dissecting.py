"""Report for "Dissecting Neural ODEs" (Massaroli et al. 2020): the annuli benchmark over
every variant, the integral loss, and augmentation on images.

Everything is read from the run records: the variant from `.hydra/overrides.yaml`, sizes
and settings from `.hydra/config.yaml`, accuracy and NFE from `metrics.json` and the CSV
history, wall time from `job.json`, figures from `plots/`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

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
from odelab.reports.stats import Comparison, compare

BUDGETS, BENCHMARKS = conf_budgets("dissecting")

# Variant -> what it changes from the vanilla NODE (conf/model/variant/<name>.yaml); the
# sizes (extra dimensions, basis terms, loss weight) are read from each run's config.
VARIANTS = (
    "vanilla",
    "anode",
    "input_layer",
    "higher_order",
    "galnode_fourier",
    "galnode_polynomial",
    "galnode_chebyshev",
    "stacked",
    "data_control",
    "adaptive_depth",
    "anode_integral",
)
BASES = {"fourier": "Fourier", "polynomial": "polynomial", "chebyshev": "Chebyshev"}
IMAGE_AUGMENTS = ("zero", "input_layer", "higher_order")
IMAGE_DATASETS = {"mnist_t10k": "MNIST (offline split)", "fashion_mnist": "Fashion-MNIST"}

THEORY_NOTE = [
    "- A vanilla NODE's region for the inner class is the preimage of a half-plane under a",
    "  homeomorphism, so it is unbounded and has to cut through the shell; on a finite",
    "  sample the flow can make that cut a thin channel (see its decision-boundary figure).",
]
PAPER_NOTES = [
    "- Paper: the vanilla Neural ODE cannot separate the annuli (its flow is a homeomorphism of",
    "  the plane and the readout linear), while augmentation, data control and adaptive depth do.",
    "  We test that qualitative claim; every number below is ours. The paper's image results",
    "  come from full training runs and are not comparable with the small image budget here.",
]


# --- reading the records -------------------------------------------------------------


def _seed(job: JobResult) -> str:
    return job.overrides.get("seed", "0")


def _nfe_per_step(job: JobResult) -> float:
    """Mean forward + backward evaluations per training step over all epochs."""
    total = 0.0
    for key in ("train/nfe_forward_epoch", "train/nfe_backward_epoch"):
        _, values = job.run.epoch_series(key)
        total += sum(values) / len(values) if values else job.metrics.get(key, math.nan)
    return total


def _train_seconds(job: JobResult) -> float:
    seconds = job.run.step_seconds
    return math.nan if seconds is None else seconds


def _annuli_key(job: JobResult) -> tuple[int, str] | None:
    cfg = run_config(job)
    if cfg is None or "AnnuliDataModule" not in str(cfg.data.get("_target_", "")):
        return None
    return int(cfg.data.dim), job.overrides.get("model/variant", "vanilla")


def _image_key(job: JobResult) -> tuple[str, str] | None:
    cfg = run_config(job)
    if cfg is None or "ImageDataModule" not in str(cfg.data.get("_target_", "")):
        return None
    data = job.overrides.get("data", "mnist_t10k")
    net = cfg.model.net
    model = f"{net.augment} augmentation" if "augment" in net else "ODE-Net (plain)"
    return data, model


def _group(jobs: Sequence[JobResult], key_fn) -> dict:
    groups: dict = defaultdict(list)
    for job in jobs:
        key = key_fn(job)
        if key is not None:
            groups[key].append(job)
    for members in groups.values():
        members.sort(key=lambda j: int(_seed(j)))
    return groups


def _values(jobs: Sequence[JobResult], key: str, scale: float = 1.0) -> list[float]:
    return [j.metrics.get(key, math.nan) * scale for j in jobs]


def _seed_values(jobs: Sequence[JobResult], fn: Callable[[JobResult], float]) -> dict[str, float]:
    """A derived value (not one metric) per seed, keyed like `by_seed` for `paired`."""
    return {_seed(j): fn(j) for j in jobs}


def _describe(job: JobResult) -> str:
    """What the run's variant changes from the vanilla NODE, with sizes from its config."""
    cfg = run_config(job)
    if cfg is None:
        return "?"
    net, field = cfg.model.net, cfg.model.net.field
    parts = []
    extra = f"+{net.augment_dim} dimension{'s' if net.augment_dim != 1 else ''}"
    if net.augment == "zero":
        parts.append(f"zero augmentation (ANODE), {extra}")
    elif net.augment == "input_layer":
        parts.append(f"input-layer augmentation: learned linear lift, {extra}")
    elif net.augment == "higher_order":
        parts.append("higher-order augmentation: second-order ODE on (position, velocity)")
    if field.weights in BASES:
        parts.append(f"GalNODE, {BASES[field.weights]} basis in depth, {field.terms} terms")
    elif field.weights == "stacked":
        parts.append(f"stacked NODE, {field.terms} piecewise-constant intervals")
    if net.data_control:
        parts.append("data control: f(z, x)")
    if net.adaptive_depth:
        parts.append("adaptive depth: horizon T(x) learned")
    if net.integral_weight > 0:
        parts.append(f"integral loss (weight {net.integral_weight})")
    return " + ".join(parts) or "depth-invariant field, no augmentation"


def _acc(job: JobResult) -> float:
    return 100 * job.metrics.get("test/acc", math.nan)


def _metric_row(jobs: Sequence[JobResult]) -> list[str]:
    params = {int(j.metrics.get("model/params", 0)) for j in jobs}
    return [
        fmt_mean_std([_acc(j) for j in jobs], spec=".2f"),
        ", ".join(f"{p:,}" for p in sorted(params)),
        fmt_mean_std([_nfe_per_step(j) for j in jobs], spec=".1f"),
        fmt_mean_std(_values(jobs, "test/nfe_forward"), spec=".1f"),
        fmt_mean_std([_train_seconds(j) for j in jobs], spec=".1f"),
        fmt_mean_std([j.seconds if j.seconds is not None else math.nan for j in jobs], spec=".0f"),
        str(len(jobs)),
    ]


METRIC_HEADER = [
    "test accuracy (%)",
    "parameters",
    "NFE per training step",
    "NFE per test solve",
    "training time (s)",
    "run wall time (s)",
    "n",
]


# --- sections ------------------------------------------------------------------------


def _annuli_section(groups: dict, dim: int) -> list[str]:
    rows = [
        [f"`{v}`", _describe(groups[(dim, v)][0]), *_metric_row(groups[(dim, v)])]
        for v in VARIANTS
        if (dim, v) in groups
    ]
    if not rows:
        return []
    lines = [
        f"## Concentric annuli in {dim} dimensions",
        "",
        markdown_table(["variant", "what changes", *METRIC_HEADER], rows),
        "",
    ]
    vanilla = groups.get((dim, "vanilla"))
    if vanilla:
        found: list[tuple[str, Comparison]] = []
        for v in VARIANTS:
            if v == "vanilla" or (dim, v) not in groups:
                continue
            a, b = paired(
                by_seed(groups[(dim, v)], "test/acc", 100), by_seed(vanilla, "test/acc", 100)
            )
            c = compare(
                a,
                b,
                a_name=f"`{v}`",
                b_name="the vanilla NODE",
                metric="test accuracy (%)",
                higher_is_better=True,
                paired=True,
            )
            found.append((v, c))
        if found:
            lines += [
                (
                    "Test accuracy against the vanilla NODE (percentage points, paired over seeds, "
                    "95 % interval):"
                ),
                "",
                markdown_table(
                    ["variant", "difference", "95 % CI", "n", "outcome"],
                    [[f"`{v}`", *c.cells(".2f")] for v, c in found],
                ),
                "",
            ]
        lines += [
            *_vanilla_summary(groups, dim, vanilla, found),
            *(THEORY_NOTE if dim == 2 else []),
            "",
        ]
    return lines


def _vanilla_summary(
    groups: dict, dim: int, vanilla: Sequence[JobResult], found: Sequence[tuple[str, Comparison]]
) -> list[str]:
    """Sentences whose wording follows the measured comparisons with the vanilla NODE."""
    by_outcome: dict[str, list[str]] = defaultdict(list)
    for v, c in found:
        by_outcome[c.outcome].append(f"`{v}`")
    van_mean = mean_std([_acc(j) for j in vanilla])[0]
    means = {v: mean_std([_acc(j) for j in groups[(dim, v)]])[0] for v, _ in found}
    lines = [f"- The vanilla NODE reaches {van_mean:.2f} % mean test accuracy in {dim}D."]
    if means:
        best = max(means, key=lambda v: means[v])
        gap = means[best] - van_mean
        lines.append(
            f"- The best variant, `{best}`, reaches {means[best]:.2f} %: the vanilla NODE is "
            f"{gap:.2f} points {'below' if gap > 0 else 'at or above'} it on average."
        )
    labels = {
        "better": "higher than the vanilla NODE's beyond noise",
        "within noise": "within noise of the vanilla NODE's",
        "worse": "lower than the vanilla NODE's beyond noise",
        "n/a": "not comparable (too few paired seeds)",
    }
    for outcome, label in labels.items():
        if by_outcome.get(outcome):
            lines.append(f"- Accuracy {label}: {', '.join(by_outcome[outcome])}.")
    return lines


def _integral_section(groups: dict) -> list[str]:
    base, integral = groups.get((2, "anode")), groups.get((2, "anode_integral"))
    if not base or not integral:
        return []
    cfg = run_config(integral[0])
    weight = cfg.model.net.integral_weight if cfg is not None else "?"
    rows, verdicts = [], []
    checks = [
        ("test accuracy (%)", _acc, True),
        ("NFE per training step", _nfe_per_step, False),
        ("NFE per test solve", lambda j: j.metrics.get("test/nfe_forward", math.nan), False),
        ("training time (s)", _train_seconds, False),
    ]
    for metric, fn, higher in checks:
        a, b = paired(_seed_values(integral, fn), _seed_values(base, fn))
        c = compare(
            a,
            b,
            a_name="the integral-loss model",
            b_name="the terminal-loss model",
            metric=metric,
            higher_is_better=higher,
            paired=True,
        )
        rows.append(
            [metric, fmt_mean_std(a, spec=".2f"), fmt_mean_std(b, spec=".2f"), *c.cells(".2f")]
        )
        verdicts.append(f"- {c.verdict}")
    return [
        "## Integral loss against the terminal loss (2D annuli, zero augmentation)",
        "",
        f"The integral-loss model adds {weight} x the readout's cross-entropy integrated over the",
        "trajectory (an extra state component, differentiated like the state) to the terminal",
        "cross-entropy; the terminal-loss model is `anode`. Differences are integral minus",
        "terminal.",
        "",
        markdown_table(
            ["metric", "integral loss", "terminal loss", "difference", "95 % CI", "n", "outcome"],
            rows,
        ),
        "",
        *verdicts,
        "",
    ]


def _adaptive_section(groups: dict) -> list[str]:
    jobs = groups.get((2, "adaptive_depth"))
    if not jobs:
        return []
    horizon, spread = _values(jobs, "test/horizon"), _values(jobs, "test/horizon_std")
    cfg = run_config(jobs[0])
    t_end = cfg.model.net.t_end if cfg is not None else "?"
    return [
        "## Adaptive depth",
        "",
        (
            f"- Learned horizon T(x) on the test set: mean {fmt_mean_std(horizon, spec='.3f')}"
            f", spread across inputs (std within a run) {fmt_mean_std(spread, spec='.3f')}"
            f" (initial horizon {t_end}; n = {len(jobs)})."
        ),
        "",
    ]


def _image_section(groups: dict) -> list[str]:
    lines: list[str] = []
    for data, label in IMAGE_DATASETS.items():
        plain = groups.get((data, "ODE-Net (plain)"))
        models = ["ODE-Net (plain)", *(f"{a} augmentation" for a in IMAGE_AUGMENTS)]
        rows = [[m, *_metric_row(groups[(data, m)])] for m in models if (data, m) in groups]
        if not rows:
            continue
        cfg = run_config(
            groups[(data, models[0])][0]
            if plain
            else next(groups[(data, m)] for m in models if (data, m) in groups)[0]
        )
        subset = cfg.data.train_subset if cfg is not None else "?"
        tests = cfg.trainer.get("limit_test_batches") if cfg is not None else None
        test_note = (
            f"the first {tests} test batch(es) of {cfg.data.eval_batch_size} images"
            if isinstance(tests, int)
            else "the full test split"
        )
        augmented = [j for m in models[1:] for j in groups.get((data, m), [])]
        extra = run_config(augmented[0]).model.net.augment_channels if augmented else "?"
        lines += [
            f"## Images: {label}",
            "",
            (
                f"{cfg.trainer.max_epochs if cfg else '?'} epoch(s) on {subset} training images, "
                f"batch {cfg.data.batch_size if cfg else '?'}, "
                f"{cfg.model.net.channels if cfg else '?'} channels, "
                f"{cfg.solver.method if cfg else '?'} + {cfg.sensitivity.method if cfg else '?'}; "
                f"accuracy on {test_note}. Zero and input-layer augmentation add "
                f"{extra} channels; higher-order adds as many velocity channels as "
                "the block has."
            ),
            "",
            markdown_table(["model", *METRIC_HEADER], rows),
            "",
        ]
        if plain:
            comps = []
            for m in models[1:]:
                if (data, m) not in groups:
                    continue
                for metric, fn, higher in (
                    ("test accuracy (%)", _acc, True),
                    ("NFE per training step", _nfe_per_step, False),
                ):
                    a, b = paired(_seed_values(groups[(data, m)], fn), _seed_values(plain, fn))
                    c = compare(
                        a,
                        b,
                        a_name=m,
                        b_name="the plain ODE-Net",
                        metric=metric,
                        higher_is_better=higher,
                        paired=True,
                    )
                    comps.append([m, metric, *c.cells(".2f")])
            lines += [
                "Against the plain ODE-Net (paired over seeds):",
                "",
                markdown_table(["model", "metric", "difference", "95 % CI", "n", "outcome"], comps),
                "",
            ]
    return lines


def _cnf_key(job: JobResult) -> str | None:
    cfg = run_config(job)
    if cfg is None or "ConditionalToy2D" not in str(cfg.data.get("_target_", "")):
        return None
    return "data-controlled CNF"


def _cnf_section(jobs: Sequence[JobResult], report_dir: Path) -> list[str]:
    if not jobs:
        return []
    cfg = run_config(jobs[0])
    names = ", ".join(f"c = {k}: {n}" for k, n in enumerate(cfg.data.names)) if cfg else "?"
    lines = [
        "## Data-controlled CNF (2D targets)",
        "",
        f"One standard normal prior and one field f(t, z, c) ({names}); "
        f"{cfg.trainer.max_epochs if cfg else '?'} epochs of {cfg.data.n_train if cfg else '?'} "
        "points per target.",
        "",
        markdown_table(
            ["model", "conditional test NLL (nats)", "NFE per training step", "n"],
            [
                [
                    "data-controlled CNF",
                    fmt_mean_std(_values(jobs, "test/nll"), spec=".3f"),
                    fmt_mean_std([_nfe_per_step(j) for j in jobs], spec=".1f"),
                    str(len(jobs)),
                ]
            ],
        ),
        "",
    ]
    first = [j for j in jobs if _seed(j) == "0"]
    plots = copy_plots(first[0], report_dir, prefix="cnf_") if first else []
    lines += [f"![{p.stem}]({report_dir.name}/{p.name})" for p in plots]
    return [*lines, ""] if plots else lines


def _figures(groups: dict, report_dir: Path) -> list[str]:
    first = next((js[0] for (d, _), js in sorted(groups.items()) if d == 2), None)
    cfg = run_config(first) if first is not None else None
    depths = cfg.model.n_depths if cfg is not None else "several"
    lines = [
        "## Figures (2D annuli, seed 0)",
        "",
        f"Each variant: the state's first two components at {depths} depths (class 0 blue,",
        "class 1 orange), and P(outer shell) on the input plane with the even-odds decision",
        "boundary.",
        "",
    ]
    found = False
    for v in VARIANTS:
        jobs = [j for j in groups.get((2, v), []) if _seed(j) == "0"]
        plots = copy_plots(jobs[0], report_dir, prefix=f"{v}_") if jobs else []
        if plots:
            found = True
            lines += (
                [f"### `{v}`", ""]
                + [f"![{v} {p.stem}]({report_dir.name}/{p.name})" for p in plots]
                + [""]
            )
    return lines if found else []


def _setup(jobs: Sequence[JobResult], budget: str) -> list[str]:
    annuli = [j for j in jobs if _annuli_key(j) is not None]
    cfg = run_config(annuli[0]) if annuli else None
    lines = [
        (
            f"- Budget: `{budget}`; seeds: "
            f"{', '.join(sorted({_seed(j) for j in jobs}, key=int))}; device: {device_label(jobs)}."
        )
    ]
    if cfg is not None:
        net, field = cfg.model.net, cfg.model.net.field
        lines.append(
            f"- Annuli: {cfg.data.n_train} training points, {cfg.data.n_test} fixed test points, "
            "ball radius "
            f"{cfg.data.r_inner}, shell {cfg.data.r_shell_low} to {cfg.data.r_shell_high}; "
            f"{cfg.trainer.max_epochs} epochs of batch {cfg.data.batch_size}, "
            f"Adam lr {cfg.model.optimizer.lr}; "
            f"field MLP with {field.hidden} {field.activation} units, horizon {net.t_end}, "
            f"{cfg.solver.method} rtol={cfg.solver.rtol} atol={cfg.solver.atol}, "
            f"{cfg.sensitivity.method} "
            "gradients; linear readout."
        )
    lines += [
        "- NFE per training step: forward + backward evaluations averaged over all training steps;",
        "  NFE per test solve: one evaluation solve; training time: summed step times.",
        "",
    ]
    return lines


def _machine(jobs: Sequence[JobResult]) -> str:
    """The CPU core count the runs saw (device.json), or the devices' names."""
    counts = set()
    for job in jobs:
        path = job.output_dir / "device.json"
        if path.is_file():
            info = json.loads(path.read_text())
            if info.get("type") == "cpu" and "cpu_count" in info:
                counts.add(int(info["cpu_count"]))
    if len(counts) == 1:
        return f"{counts.pop()} CPU core(s)"
    return device_label(jobs)


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    done = [j for j in jobs if j.ok]
    failed = [j for j in jobs if not j.ok]
    annuli = _group(done, _annuli_key)
    images = _group(done, _image_key)
    lines = [
        "# Dissecting Neural ODEs: reproduction report",
        "",
        "Massaroli, Poli, Park, Yamashita, Asama (2020). One classifier (`experiment=annuli`,",
        "`conf/model/dissecting.yaml`) with each design choice of the paper as a config option",
        "(`model/variant=...`), on concentric annuli; the three augmentations on images against",
        "the plain ODE-Net of Chen et al. 2018, Table 1 (`model/net=odenet_augmented`).",
        "",
        *_setup(done, budget),
        *PAPER_NOTES,
        "",
    ]
    for dim in sorted({d for d, _ in annuli}):
        lines += _annuli_section(annuli, dim)
    lines += _integral_section(annuli)
    lines += _adaptive_section(annuli)
    lines += _image_section(images)
    lines += _cnf_section([j for j in done if _cnf_key(j)], report_dir)
    lines += _figures(annuli, report_dir)
    lines += [
        "## What differs from the paper",
        "",
        f"- Budget sized for {_machine(done)}: short training (epochs above), the annuli sizes",
        "  above, small fields; the paper trains longer and on GPUs.",
        "- The integral loss here is the readout's cross-entropy along the trajectory; the paper's",
        "  integral-loss examples are trajectory tracking and control objectives.",
        "- Adaptive depth rescales time (solve on [0, 1] with the field times T(x)); for the",
        "  depth-invariant field this is the same map as integrating to T(x).",
        "- Images: a few epochs on a training subset with small nets (the paper: full data,",
        "  longer training); accuracy on a stated part of each test set.",
        "- The data-controlled CNF is trained on FFJORD toy targets (named above; the paper's",
        "  Figure 4 uses its own 2D targets) for a few epochs.",
        "",
    ]
    labels = []
    for j in done:
        key = _annuli_key(j) or _image_key(j) or ("2D", _cnf_key(j))
        labels.append(
            (
                f"{key[1]} ({key[0]}{'D' if isinstance(key[0], int) else ''}), seed {_seed(j)}",
                j.output_dir,
            )
        )
    lines += runs_section(labels, failed)
    return "\n".join(lines)


DISSECTING = Reproduction(
    name="dissecting",
    title="Dissecting Neural ODEs (Massaroli et al. 2020): annuli variants and image augmentation",
    budgets=BUDGETS,
    build=build_report,
    benchmarks=BENCHMARKS,
)
