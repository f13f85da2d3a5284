"""Report on the speed of the ODE core: host reads, framework overhead, compiled fields,
per-sample step control (torchode) and the adjoint seminorm (Kidger et al. 2021)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odelab.reports.base import (
    JobResult,
    Jobs,
    Reproduction,
    conf_budgets,
    device_label,
    fmt_mean_std,
    markdown_table,
    paired,
    run_config,
    runs_section,
)
from odelab.reports.stats import compare

BUDGETS, BENCHMARKS = conf_budgets("speed")

# The seminorm becomes the default where it saves at least this share of backward NFE at
# equal quality (within noise).
SEMINORM_SAVING = 0.30
# The most odelab's training step may cost against the hand-written loop (idle machine);
# the spiral report uses the same target.
OVERHEAD_TARGET = 1.05
LIBRARIES = (
    "odelab",
    "torchdiffeq",
    "torchode",
    "lightning",
    "torchmetrics",
    "torch",
    "torch.optim",
    "other",
)

# task -> (experiment, quality metric, its label, higher is better, scale for display).
# The default is decided on validation metrics: test metrics are for final tables only.
TASKS = {
    "ODE-Net MNIST": ("mnist_odenet", "val/acc", "validation accuracy (%)", True, 100.0),
    "CNF 8gaussians": ("cnf_toy", "val/nll", "validation NLL (nats)", False, 1.0),
}


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _epoch_mean(job: JobResult, key: str) -> float | None:
    """Mean over the run's epochs of a per-epoch mean (`<key>_epoch`); equal-sized epochs."""
    _, values = job.run.epoch_series(key)
    return statistics.mean(values) if values else job.metrics.get(key)


# ---------------------------------------------------------------------------
# Seminorm


def _seminorm(job: JobResult) -> bool:
    cfg = run_config(job)
    value = job.overrides.get("sensitivity.seminorm")
    if value is None and cfg is not None:
        return bool(cfg.sensitivity.seminorm)
    return str(value).lower() == "true"


def _seed(job: JobResult) -> str:
    return job.overrides.get("seed", "0")


def _pair(
    sides: dict[bool, dict[str, dict[str, Any]]], key: str
) -> tuple[list[float], list[float]]:
    """(seminorm, full) values of `key` on the seeds both sides have, in one order."""
    semi = {s: v[key] for s, v in sides[True].items() if v[key] is not None}
    full = {s: v[key] for s, v in sides[False].items() if v[key] is not None}
    return paired(semi, full)


def _budget_text(job: JobResult) -> str:
    """Steps and size of one seminorm run, from its config."""
    cfg = run_config(job)
    if cfg is None:
        return "run config not found"
    epochs = cfg.trainer.max_epochs
    tol = f"{cfg.solver.method} at rtol={cfg.solver.rtol}, atol={cfg.solver.atol}"
    if "train_subset" in cfg.data:
        steps = -(-cfg.data.train_subset // cfg.data.batch_size) * epochs
        return (
            f"{steps} training steps per run ({cfg.data.train_subset} images, batch "
            f"{cfg.data.batch_size}, {epochs} epoch(s)), {cfg.model.net.channels} channels "
            f"(the paper: 64), {tol}"
        )
    steps = cfg.data.batches_per_epoch * epochs
    return f"{steps} training steps per run (batch {cfg.data.batch_size}), {tol}"


def seminorm_section(jobs: Sequence[JobResult]) -> list[str]:
    lines = [
        "## Adjoint seminorm vs full norm",
        "",
        "The adjoint's step-size control measures its error on the state and its adjoint only "
        "(seminorm, Kidger et al. 2021) or also on the parameter gradients (full norm). Same "
        "seed, data and steps for both; backward NFE and step time are means over the run's "
        "training steps. Rule: the seminorm becomes the default where it saves at least "
        f"{SEMINORM_SAVING:.0%} of backward NFE and the quality is within noise (or better).",
        "",
    ]
    header = [
        "task",
        "norm",
        "n",
        "backward NFE / step",
        "forward NFE / step",
        "s / step",
        "quality",
    ]
    rows: list[list[str]] = []
    verdicts: list[str] = []
    budget_lines: list[str] = []
    for task, (experiment, metric, label, higher, scale) in TASKS.items():
        mine = [j for j in jobs if j.ok and j.overrides.get("experiment") == experiment]
        if not mine:
            continue
        budget_lines.append(f"- {task}: {_budget_text(mine[0])}.")
        sides: dict[bool, dict[str, dict[str, float]]] = {False: {}, True: {}}
        for job in mine:
            values = {
                "backward": _epoch_mean(job, "train/nfe_backward_epoch"),
                "forward": _epoch_mean(job, "train/nfe_forward_epoch"),
                "time": _epoch_mean(job, "train/step_time_epoch"),
                "quality": None if job.metrics.get(metric) is None else scale * job.metrics[metric],
            }
            sides[_seminorm(job)][_seed(job)] = values
        for semi in (False, True):
            side = sides[semi]

            def col(key: str, side: dict[str, dict[str, float]] = side) -> list[float]:
                return [v[key] for v in side.values() if v[key] is not None]

            rows.append(
                [
                    task,
                    "seminorm" if semi else "full",
                    str(len(side)),
                    fmt_mean_std(col("backward"), spec=".1f"),
                    fmt_mean_std(col("forward"), spec=".1f"),
                    fmt_mean_std(col("time"), spec=".2f"),
                    f"{fmt_mean_std(col('quality'), spec='.3g')} ({label})",
                ]
            )

        nfe_semi, nfe_full = _pair(sides, "backward")
        q_semi, q_full = _pair(sides, "quality")
        t_semi, t_full = _pair(sides, "time")
        nfe = compare(
            nfe_semi,
            nfe_full,
            a_name="the seminorm",
            b_name="the full norm",
            metric=f"backward NFE per step ({task})",
            higher_is_better=False,
        )
        quality = compare(
            q_semi,
            q_full,
            a_name="the seminorm",
            b_name="the full norm",
            metric=f"{label} ({task})",
            higher_is_better=higher,
        )
        seconds = compare(
            t_semi,
            t_full,
            a_name="the seminorm",
            b_name="the full norm",
            metric=f"seconds per step ({task})",
            higher_is_better=False,
        )
        saving = 1 - statistics.mean(nfe_semi) / statistics.mean(nfe_full) if nfe_full else 0.0
        holds = saving >= SEMINORM_SAVING and quality.outcome in ("within noise", "better")
        decision = (
            f"**{task}: the rule holds** (saving {saving:.0%}, quality {quality.outcome}): "
            "the seminorm is the better default here."
            if holds
            else f"**{task}: the rule does not hold** (saving {saving:.0%} of backward NFE, "
            f"quality {quality.outcome}): the full norm stays the default."
        )
        same = bool(nfe_full) and nfe_semi == nfe_full and q_semi == q_full
        if same:
            decision += (
                " Every seed's backward NFE and quality are identical under both norms: the "
                "adjoint took the same steps, so the parameter-gradient part of the full norm "
                "never limited the step size in this short run (it can once training makes "
                "the dynamics harder)."
            )
        verdicts += [
            "- " + nfe.verdict,
            "- " + seconds.verdict,
            "- " + quality.verdict,
            "- " + decision,
        ]
    if not rows:
        return lines + ["No seminorm runs in this budget.", ""]
    return lines + [*budget_lines, "", markdown_table(header, rows), "", *verdicts, ""]


# ---------------------------------------------------------------------------
# Benchmark sections


def host_reads_section(record: dict[str, Any]) -> list[str]:
    steps = record["steps"]
    cases = record["cases"]
    used = [lib for lib in LIBRARIES if any(lib in c["by_library"] for c in cases.values())]
    rows = [
        [
            name,
            f"{c['total'] / steps:.1f}",
            *(f"{c['by_library'].get(lib, 0) / steps:.1f}" for lib in used),
        ]
        for name, c in cases.items()
    ]
    return [
        "## Host reads per training step",
        "",
        "Reads of a tensor's value on the host (`Tensor.item()`, `bool()`, `float()`, a tensor "
        "compared in a Python `if`), counted as calls of `aten::_local_scalar_dense` by a "
        f"dispatch mode over {steps} training steps (forward, backward, optimizer step and "
        "every hook) and attributed to the library whose code asked "
        "(`odelab.ode.fast.count_host_reads`). Measured on the CPU, where a read is a plain "
        "load: this counts what would be a device synchronisation on CUDA for reads of device "
        "tensors (the optimizer's step counters live on the host and would not sync). Sizes "
        "are shrunk (the count does not depend on them).",
        "",
        markdown_table(["training step", "reads / step", *used], rows),
        "",
        "odelab's own reads are the NaN/inf check, once per solve (with torchode also its "
        "status check, once per solve); NFE are counted on the host without reading device "
        "tensors. The adaptive "
        "solvers read their error ratio and step times every step (torchdiffeq and torchode "
        "alike); torchdiffeq's fixed-grid loop reads its time grid every step, the capture "
        "loop (`solver.capture=true`) reads nothing per step, which is what lets CUDA "
        "capture it.",
        "",
    ]


def overhead_section(record: dict[str, Any], load: list[float] | None) -> list[str]:
    ms = record["ms_per_step"]
    if "lightning" in ms:
        return overhead_floor_section(record, load)
    rows = []
    ratios: dict[str, float] = {}
    for clock in ("seconds", "cpu_seconds"):
        plain, ours = ms["plain"][clock], ms["odelab"][clock]
        per_repeat = [o / p for o, p in zip(ours, plain, strict=True)]
        ratio = _median(ours) / _median(plain)
        ratios[clock] = ratio
        rows.append(
            [
                "wall" if clock == "seconds" else "process CPU",
                f"{_median(plain):.2f}",
                f"{_median(ours):.2f}",
                f"**{ratio:.3f}**",
                f"{min(per_repeat):.3f} to {max(per_repeat):.3f}",
            ]
        )
    wall = ratios["seconds"]
    load_text = (
        f"load average {load[0]:.1f} at the start of the benchmark on 2 cores"
        if load
        else "load not recorded"
    )
    return [
        "## Spiral framework overhead",
        "",
        f"{record['steps']} spiral training steps timed after {record['warmup']} warm-up steps, "
        f"odelab against a hand-written torch + torchdiffeq loop doing the same work (largest "
        f"weight difference after training {record['max_weight_difference']:.1e}), "
        f"{record['repeats']} repeats alternating who goes first "
        "(`experiments/bench_spiral.py`'s measurement).",
        "",
        markdown_table(
            [
                "clock",
                "plain ms/step (median)",
                "odelab ms/step (median)",
                "ratio of medians",
                "ratio per repeat (spread)",
            ],
            rows,
        ),
        "",
        f"Measured under load ({load_text}; other programs shared the machine), so the spread "
        f"is wide. Wall ratio {wall:.3f}: "
        + ("at or under" if wall <= OVERHEAD_TARGET else "over")
        + f" the {OVERHEAD_TARGET} target, which is stated for an idle machine.",
        "",
    ]


def _ratio(ms: dict[str, Any], side: str, base: str, clock: str) -> tuple[float, list[float]]:
    """Ratio of medians `side / base` on `clock` and the ratio of each repeat (its spread)."""
    ours, theirs = ms[side][clock], ms[base][clock]
    per_repeat = [o / p for o, p in zip(ours, theirs, strict=True)]
    return _median(ours) / _median(theirs), per_repeat


def overhead_floor_section(record: dict[str, Any], load: list[float] | None) -> list[str]:
    """The overhead table with the floor: the same step in a bare LightningModule."""
    ms = record["ms_per_step"]
    rows = []
    ratios: dict[tuple[str, str, str], float] = {}
    for clock in ("seconds", "cpu_seconds"):
        cells = ["wall" if clock == "seconds" else "process CPU"]
        cells += [f"{_median(ms[side][clock]):.2f}" for side in ("plain", "lightning", "odelab")]
        for side, base in (("lightning", "plain"), ("odelab", "plain"), ("odelab", "lightning")):
            ratio, per_repeat = _ratio(ms, side, base, clock)
            ratios[side, base, clock] = ratio
            cells.append(f"**{ratio:.3f}** ({min(per_repeat):.3f} to {max(per_repeat):.3f})")
        rows.append(cells)
    floor = ratios["lightning", "plain", "seconds"]
    ours = ratios["odelab", "plain", "seconds"]
    share = ratios["odelab", "lightning", "seconds"]
    load_text = (
        f"load average {load[0]:.1f} at the start of the benchmark on 2 cores"
        if load
        else "load not recorded"
    )
    if floor > OVERHEAD_TARGET:
        verdict = (
            f"The bare LightningModule alone takes {floor:.3f} times the hand-written loop's "
            f"wall time per step, over the {OVERHEAD_TARGET} target: on this step the target "
            "cannot be met by any LightningModule, and every odelab task is one. odelab's own "
            f"share on top of Lightning is {share:.3f}; odelab against the hand-written loop "
            f"{ours:.3f}."
        )
    else:
        verdict = (
            f"The bare LightningModule takes {floor:.3f} times the hand-written loop's wall "
            f"time per step; odelab {ours:.3f}: "
            + ("at or under" if ours <= OVERHEAD_TARGET else "over")
            + f" the {OVERHEAD_TARGET} target (odelab on top of Lightning: {share:.3f})."
        )
    return [
        "## Spiral framework overhead",
        "",
        f"{record['steps']} spiral training steps timed after {record['warmup']} warm-up steps: "
        "odelab, a hand-written torch + torchdiffeq loop doing the same work, and the floor: "
        "the same step (same field, windows, solver, optimizer and schedule) in a bare "
        "LightningModule under a bare Trainer (no odelab code, no logging, checkpoints or "
        "callbacks). Largest weight difference after training against the hand-written loop "
        f"{record['max_weight_difference']:.1e}; {record['repeats']} repeats, rotating which "
        "goes first (`odelab.overhead`). Ratios are of the medians over the repeats; the range "
        "in brackets is the ratio within each repeat (the spread).",
        "",
        markdown_table(
            [
                "clock",
                "plain ms/step",
                "bare Lightning ms/step",
                "odelab ms/step",
                "Lightning / plain",
                "odelab / plain",
                "odelab / Lightning",
            ],
            rows,
        ),
        "",
        f"Measured with {load_text}. {verdict}",
        "",
    ]


def _speedups(eager: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[float]:
    """Per seed: eager ms per step / the variant's (seeds both sides finished)."""
    times = {r["seed"]: r["median_ms"] for r in eager if r.get("median_ms")}
    return [
        times[r["seed"]] / r["median_ms"] for r in runs if r.get("median_ms") and r["seed"] in times
    ]


def _by_seed(runs: list[dict[str, Any]], key: str, scale: float = 1.0) -> dict[str, float]:
    """`key` of each finished run by seed (as `paired` takes them)."""
    return {str(r["seed"]): scale * r[key] for r in runs if r.get(key) is not None}


def gpu_section(record: dict[str, Any]) -> list[str]:
    """Training steps of ODE-Net and RK-Net on the GPU: eager, each fast path and the plain
    torchdiffeq step, with the speed-up targets and accuracy after the short run."""
    seeds = record["seeds"]
    lines = [
        "## GPU training steps: ODE-Net and RK-Net",
        "",
        f"Device: {record['device']['name']} (torch {record['device']['torch']}). Batch "
        f"{record['batch']}, {record['channels']} channels, {record['steps']} SGD steps per "
        f"variant and seed ({record['optimizer']}) from the same initial weights and batches; "
        f"seeds {', '.join(map(str, seeds))}. Step time: the median over blocks of "
        f"{record['block']} steps after the first {record['warmup']} (which hold compilation "
        "and graph capture), one device synchronisation per block. Speed-up: eager ms per "
        "step / the variant's, per seed. Accuracy: the trained network on "
        f"{record['held_out']} held-out images. Data: {record['data']}.",
        "",
    ]
    header = [
        "model",
        "variant",
        "n",
        "ms / step",
        "speed-up vs eager",
        "forward NFE / step",
        "backward NFE / step",
        "held-out accuracy (%)",
        "first steps (s)",
    ]
    rows: list[list[str]] = []
    verdicts: list[str] = []
    for model, entry in record["models"].items():
        variants = entry["variants"]
        eager = variants.get("eager", [])
        best: tuple[float, str] | None = None
        for name, runs in variants.items():
            done = [r for r in runs if "error" not in r]
            errors = sorted({r["error"] for r in runs if "error" in r})
            if not done:
                rows.append([model, name, "0", f"failed: {'; '.join(errors)}", "", "", "", "", ""])
                continue
            fell_back = sum(bool(r.get("capture_failed")) for r in done)
            if fell_back:  # the loop ran uncaptured: say so beside its time
                errors.append(f"capture failed in {fell_back}, ran uncaptured")
            ups = _speedups(eager, done)
            up_text = f"{_median(ups):.2f}x ({min(ups):.2f} to {max(ups):.2f})" if ups else "n/a"
            accs = [100 * r["accuracy"] for r in done]
            rows.append(
                [
                    model,
                    name + (f" ({'; '.join(errors)})" if errors else ""),
                    str(len(done)),
                    fmt_mean_std([r["median_ms"] for r in done], spec=".2f"),
                    up_text,
                    fmt_mean_std([r["nfe_forward"] for r in done], spec=".1f"),
                    fmt_mean_std([r["nfe_backward"] for r in done], spec=".1f"),
                    fmt_mean_std(accs, spec=".1f"),
                    fmt_mean_std([r["warmup_s"] for r in done], spec=".1f"),
                ]
            )
            if name in ("eager", "plain torchdiffeq") or not ups:
                continue
            if best is None or _median(ups) > best[0]:
                best = (_median(ups), name)
            acc_a, acc_b = paired(
                _by_seed(done, "accuracy", 100.0), _by_seed(eager, "accuracy", 100.0)
            )
            verdicts.append(
                "- "
                + compare(
                    acc_a,
                    acc_b,
                    a_name=f"{model} {name}",
                    b_name="eager",
                    metric="held-out accuracy (%)",
                    higher_is_better=True,
                ).verdict
            )
        plain = [r for r in variants.get("plain torchdiffeq", []) if "error" not in r]
        if plain and eager:
            t_a, t_b = paired(_by_seed(eager, "median_ms"), _by_seed(plain, "median_ms"))
            verdicts.append(
                "- "
                + compare(
                    t_a,
                    t_b,
                    a_name=f"{model} eager (odelab)",
                    b_name="the plain torchdiffeq step",
                    metric="ms per step",
                    higher_is_better=False,
                ).verdict
            )
        target = entry["target"]
        if best is None:
            verdicts.append(
                f"- **{model}: no fast path finished; the {target:g}x target is not met.**"
            )
        else:
            meets = "meets" if best[0] >= target else "does not meet"
            verdicts.append(
                f"- **{model}: the fastest path, {best[1]}, has a speed-up of {best[0]:.2f}x over "
                f"eager (median over seeds): it {meets} the {target:g}x target.**"
            )
    return [*lines, markdown_table(header, rows), "", *verdicts, ""]


def compile_section(record: dict[str, Any]) -> list[str]:
    rows = []
    wins: list[bool] = []
    for case, variants in record.items():
        eager = variants.get("eager", {})
        for name, result in variants.items():
            if "error" in result:
                rows.append([case, name, f"failed: {result['error']}", "", "", ""])
                if name == "compiled":
                    wins.append(False)
                continue
            ratio = (
                result["median_cpu_s"] / eager["median_cpu_s"]
                if "median_cpu_s" in eager
                else float("nan")
            )
            rows.append(
                [
                    case,
                    name,
                    f"{result['first_call_s']:.1f}",
                    f"{1e3 * result['median_cpu_s']:.1f}",
                    f"{1e3 * result['median_wall_s']:.1f}",
                    f"{ratio:.2f}",
                ]
            )
            if name == "compiled":
                wins.append(ratio < 1.0)
    verdict = (
        "Compiled fields are faster per step in every case measured here, but the compile "
        "time must be paid back: `solver.compile_field` stays opt-in."
        if wins and all(wins)
        else "Compiled fields are not faster per step in every case measured here (and pay the "
        "compile time first): `solver.compile_field` stays off by default."
    )
    return [
        "## Compiled fields (`solver.compile_field=true`)",
        "",
        "One training step (solve, loss, backward; the ODE-Net also its SGD step) with the "
        "field eager and compiled by `torch.compile` (inductor, CPU), and the ODE-Net step "
        "written as the torchdiffeq example writes it (`odeint_adjoint` on the same field). "
        "The first call holds the compilation (shortened by inductor's on-disk cache where "
        "the same graph was compiled before on this machine); per-step times are medians "
        "after warm-up, one run each under the machine's load.",
        "",
        markdown_table(
            [
                "step",
                "variant",
                "first call (s)",
                "ms CPU / step",
                "ms wall / step",
                "CPU vs eager",
            ],
            rows,
        ),
        "",
        verdict,
        "",
    ]


def per_sample_section(record: dict[str, Any]) -> list[str]:
    vdp, grids = record["van_der_pol"], record["irregular_grids"]
    rows = []
    for name in ("joint (torchdiffeq)", "per-sample (torchode)"):
        e = vdp[name]
        steps = (
            f"about {e['steps_all_samples']:.0f} (NFE / 6), all samples"
            if "steps_all_samples" in e
            else f"mean {e['steps_mean']:.0f}, {e['steps_min']}-{e['steps_max']}"
        )
        rows.append(
            [
                name,
                steps,
                str(e["nfe"]),
                f"{1e3 * _median(e['cpu_s']):.1f}",
                f"{1e3 * _median(e['wall_s']):.1f}",
            ]
        )
    grid_rows = []
    for name, e in grids.items():
        if not isinstance(e, dict):
            continue
        steps = f"mean {e['steps_mean']:.0f}, max {e['steps_max']}" if "steps_mean" in e else "-"
        grid_rows.append(
            [
                name,
                steps,
                str(e["nfe"]),
                f"{1e3 * _median(e['cpu_s']):.1f}",
                f"{1e3 * _median(e['wall_s']):.1f}",
            ]
        )
    joint_cpu = _median(vdp["joint (torchdiffeq)"]["cpu_s"])
    per_cpu = _median(vdp["per-sample (torchode)"]["cpu_s"])
    header = ["control", "steps", "NFE (batched)", "ms CPU / solve", "ms wall / solve"]
    lines = [
        "## Per-sample step control (`solver.backend=torchode`)",
        "",
        f"{vdp['batch']} Van der Pol oscillators, stiffness mu log-spaced from {vdp['mu'][0]:.1f} "
        f"to {vdp['mu'][1]:.0f}, from (2, 0) over [0, {vdp['t_end']:.0f}], dopri5 at rtol = atol "
        f"= {vdp['rtol']:g}, one forward solve (median of {vdp['repeats']}). Joint control takes "
        "every step for the whole batch; per-sample control lets each oscillator stop when "
        "its own error allows. Largest difference between the two solutions: "
        f"{vdp['max_abs_difference']:.1e}.",
        "",
        markdown_table(header, rows),
        "",
        f"Per-sample / joint CPU time per solve: {per_cpu / joint_cpu:.2f}. Each batched "
        "evaluation still runs for the whole batch until the slowest sample finishes, so the "
        "saving is in rejected and extra steps of the easy samples, paid for by torchode's "
        "heavier step bookkeeping.",
        "",
    ]
    if "skipped" in grids:
        return [*lines, f"Irregular series: not measured ({grids['skipped']}).", ""]
    return [
        *lines,
        "The latent ODE's irregular series (one training batch of `data=periodic`, "
        f"{grids['batch']} series of {grids['points_per_sample']} observed times each on "
        f"[0, {grids['t_end']:g}]), a field of the latent ODE's size (6 latent dimensions, MLP "
        "6-32-6), dopri5 at rtol = atol = 1e-5: torchdiffeq solves the batch on the union of "
        f"its series' times ({grids['union_points']} times, as the latent ODE task does) and "
        "reads each series at its own; torchode solves each series on its own times "
        "(`odelab.ode.fast.torchode_solve` with times of shape (batch, T); the `ODEBlock` API "
        f"takes one grid per solve). Largest difference: {grids['max_abs_difference']:.1e}.",
        "",
        markdown_table(header, grid_rows),
        "",
    ]


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    done = [j for j in jobs if j.ok]
    failed = [j for j in jobs if not j.ok]
    bench = getattr(jobs, "bench", {}).get("bench_speed", {})
    lines = [
        "# Speed of the ODE core: reproduction report",
        "",
        "Fast paths of `ODEBlock` measured side by side: host reads per step, framework "
        "overhead, compiled fields, per-sample step control (torchode, as in Lienen & "
        "Günnemann 2022) and the adjoint seminorm (Kidger et al. 2021).",
        f"Written by `make reproduce-speed budget={budget}` from the records in "
        f"`experiments/reports/speed_{budget}/records/`.",
        "",
        f"- Budget: `{budget}`; sweep runs: {len(done)} ({len(failed)} failed).",
        f"- Device of the sweeps: {device_label(done) if done else 'n/a'}; benchmark: "
        f"{bench.get('device', {}).get('name', 'n/a')}, {bench.get('threads', '?')} torch "
        "thread(s).",
        "- **GPU figures pending (no GPU lent)**: the CUDA paths (graph capture of fixed-grid "
        "solves, ODE-Net and RK-Net steps at batch 128 against their targets) are covered by "
        "`pytest -m gpu` tests (tests/test_fast_paths.py, tests/test_speed_bench.py) and not "
        "measured here; `make reproduce-speed budget=gpu` measures them on a CUDA machine."
        if not bench.get("cuda")
        else "- A CUDA device was present during the benchmark.",
        "- Differs from the papers: CPU only, a 2-core machine shared with other jobs, "
        "models and step counts shrunk to fit (stated in each section); peers' figures "
        "(torchode 2.2-4.3x faster steps with compilation, seminorm a median 40 % fewer "
        "backward evaluations) are GPU or full-length results."
        if "gpu" not in bench
        else "- Differs from the papers: the GPU runs are short (stated below), not the "
        "paper's 160 epochs; peers' figures (torchode 2.2-4.3x faster steps with "
        "compilation) are for other models.",
        "",
    ]
    lines += seminorm_section(done)
    if "host_reads" in bench:
        lines += host_reads_section(bench["host_reads"])
    if "overhead" in bench:
        lines += overhead_section(bench["overhead"], bench.get("load_average"))
    if "per_sample" in bench:
        lines += per_sample_section(bench["per_sample"])
    if "compile" in bench:
        lines += compile_section(bench["compile"])
    if "gpu" in bench:
        lines += gpu_section(bench["gpu"])
    if not bench:
        lines += ["No benchmark record in this budget.", ""]
    lines += runs_section(
        [
            (
                j.overrides.get("experiment", "?")
                + " seed "
                + _seed(j)
                + (" seminorm" if _seminorm(j) else " full"),
                j.output_dir,
            )
            for j in done
        ],
        failed,
    )
    return "\n".join(lines).rstrip() + "\n"


SPEED = Reproduction(
    name="speed",
    title="Speed of the ODE core: fast paths, overhead, seminorm, per-sample step control",
    budgets=BUDGETS,
    build=build_report,
    benchmarks=BENCHMARKS,
)
