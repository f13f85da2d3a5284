"""Report for the robustness study (Yan et al. 2020): CNN vs ODENet vs TisODE under attack.

One sweep per data set and training recipe; every run tests its model under the study's
attack table (`attack=study` / `study_fashion`: Gaussian noise, FGSM, PGD) in its test
loop, so the tables come straight from each run's `metrics.json`. The masking checks
(`experiments/robust_checks.py`) write one JSON record per checked model into the
budget's `bench/` folder: a fine epsilon grid, PGD against steps and restarts, the
gradient-free Square attack, and an ODE net deployed with dopri5 attacked through dopri5,
fixed-step surrogates and the CNN.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odelab.attacks.evaluate import largest_rise
from odelab.reports.base import (
    JobResult,
    Jobs,
    Reproduction,
    compare_jobs,
    conf_budgets,
    device_label,
    fmt_mean_std,
    markdown_table,
    mean_std,
    planned_jobs,
    run_config,
    runs_section,
)
from odelab.reports.mnist_table import validation_images, validation_section
from odelab.reports.stats import binomial_interval, compare, resolvable

MODELS = {"robust_cnn": "CNN", "robust_odenet": "ODENet", "tisode": "TisODE"}
# The clean test accuracy each model must reach before its robustness means anything.
FLOORS = {"mnist": 0.98, "fashion_mnist": 0.88}
DATA_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "svhn": "SVHN"}
KINDS = ("gaussian", "fgsm", "pgd")
KIND_NAMES = {"gaussian": "Gaussian noise", "fgsm": "FGSM", "pgd": "PGD"}
# TARGETS.md section 4 (seed 002), MNIST, 100 epochs, mean over the study's runs.
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "clean": {
        "CNN": {
            "gaussian_50": 98.1,
            "gaussian_75": 85.8,
            "gaussian_100": 56.4,
            "fgsm_0.15": 63.4,
            "fgsm_0.3": 24.0,
            "fgsm_0.5": 8.3,
        },
        "ODENet": {
            "gaussian_50": 98.7,
            "gaussian_75": 90.6,
            "gaussian_100": 73.2,
            "fgsm_0.15": 83.5,
            "fgsm_0.3": 42.1,
            "fgsm_0.5": 14.3,
        },
    },
    "gaussian": {
        "CNN": {
            "gaussian_100": 98.7,
            "fgsm_0.3": 54.2,
            "fgsm_0.5": 15.8,
            "pgd_0.2": 32.9,
            "pgd_0.3": 0.0,
        },
        "ODENet": {
            "gaussian_100": 99.4,
            "fgsm_0.3": 71.5,
            "fgsm_0.5": 19.9,
            "pgd_0.2": 64.7,
            "pgd_0.3": 13.0,
        },
    },
}
# Seed 002's SVHN tables (clean training, TARGETS.md section 4; Gaussian-noise training,
# the seed's second table): FGSM and PGD at 3/255, 5/255, 8/255 (the names
# attack=study_svhn gives those radii).
PAPER_SVHN: dict[str, dict[str, dict[str, float]]] = {
    "clean": {
        "CNN": {
            "gaussian_15": 90.0,
            "gaussian_25": 76.3,
            "gaussian_35": 60.9,
            "fgsm_0.0117647": 29.2,
            "fgsm_0.0196078": 13.7,
            "fgsm_0.0313725": 5.4,
        },
        "ODENet": {
            "gaussian_15": 95.7,
            "gaussian_25": 88.1,
            "gaussian_35": 78.2,
            "fgsm_0.0117647": 58.2,
            "fgsm_0.0196078": 43.0,
            "fgsm_0.0313725": 30.9,
        },
    },
    "gaussian": {
        "CNN": {
            "gaussian_35": 90.6,
            "fgsm_0.0196078": 25.3,
            "fgsm_0.0313725": 12.3,
            "pgd_0.0117647": 32.4,
            "pgd_0.0196078": 14.0,
        },
        "ODENet": {
            "gaussian_35": 95.1,
            "fgsm_0.0196078": 49.4,
            "fgsm_0.0313725": 34.7,
            "pgd_0.0117647": 50.9,
            "pgd_0.0196078": 27.2,
        },
    },
}
STUDY = {"mnist": PAPER, "svhn": PAPER_SVHN}
# The study's spread (± as printed in seed 002, same layout as the means above).
STUDY_STD: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "mnist": {
        "clean": {
            "CNN": dict(zip(PAPER["clean"]["CNN"], (0.7, 4.3, 5.6, 2.3, 8.9, 3.2), strict=True)),
            "ODENet": dict(
                zip(PAPER["clean"]["ODENet"], (0.6, 5.4, 8.6, 0.9, 2.4, 2.1), strict=True)
            ),
        },
        "gaussian": {
            "CNN": dict(zip(PAPER["gaussian"]["CNN"], (0.1, 1.1, 1.3, 3.7, 0.0), strict=True)),
            "ODENet": dict(
                zip(PAPER["gaussian"]["ODENet"], (0.1, 1.1, 1.2, 1.8, 0.2), strict=True)
            ),
        },
    },
    "svhn": {
        "clean": {
            "CNN": dict(
                zip(PAPER_SVHN["clean"]["CNN"], (1.2, 2.7, 3.9, 2.9, 1.9, 1.5), strict=True)
            ),
            "ODENet": dict(
                zip(PAPER_SVHN["clean"]["ODENet"], (0.7, 1.5, 2.1, 2.3, 1.3, 1.4), strict=True)
            ),
        },
        "gaussian": {
            "CNN": dict(zip(PAPER_SVHN["gaussian"]["CNN"], (0.2, 0.6, 0.7, 0.4, 0.5), strict=True)),
            "ODENet": dict(
                zip(PAPER_SVHN["gaussian"]["ODENet"], (0.1, 1.0, 0.5, 1.3, 1.4), strict=True)
            ),
        },
    },
}
# Both models below this accuracy (%): the column is at the floor and says nothing about
# which is more robust, so it is left out of the verdict counts.
AT_FLOOR = 1.0
# The seed's third table as printed (its column labels look shifted: the CNN's 98.4 under
# "FGSM .3" reads like a clean accuracy), so it is shown beside ours, never compared.
PAPER_TISODE = {
    "columns": ["s=100", "FGSM .3", "FGSM .5", "PGD .3"],
    "CNN": [58.0, 98.4, 21.1, 5.3],
    "ODENet": [84.2, 99.1, 36.0, 12.3],
    "TisODE": [87.9, 99.1, 66.5, 78.9],
}
BUDGETS, BENCHMARKS = conf_budgets("robust")

Groups = dict[tuple[str, str, str], list[JobResult]]


def _recipe(job: JobResult) -> str:
    return job.overrides.get("recipe", "clean")


def _data(job: JobResult) -> str:
    cfg = run_config(job)
    return str(cfg.data.get("dataset", "mnist")) if cfg is not None else "mnist"


def _model(job: JobResult) -> str:
    return MODELS.get(job.overrides.get("experiment", ""), "?")


def _label(name: str) -> str:
    """`gaussian_50` -> `s=50`, `fgsm_0.15` -> `FGSM .15`, `fgsm_0.0117647` -> `FGSM 3/255`
    (the study's column labels)."""
    kind, strength = name.split("_", 1)
    if kind == "gaussian":
        return f"s={strength}"
    pixels = float(strength) * 255
    if len(strength) > 6 and abs(pixels - round(pixels)) < 1e-4:
        return f"{kind.upper()} {round(pixels)}/255"
    value = strength[1:] if strength.startswith("0.") else strength
    return f"{kind.upper()} {value}"


def _columns(jobs: Sequence[JobResult]) -> list[str]:
    """The attack names the jobs logged, by kind (noise, FGSM, PGD), then strength."""
    names = {
        key[len("test/acc/") :]
        for job in jobs
        for key in job.metrics
        if key.startswith("test/acc/") and key.split("/")[-1].split("_")[0] in KINDS
    }
    return sorted(names, key=lambda n: (KINDS.index(n.split("_")[0]), float(n.split("_")[1])))


def _acc(jobs: Sequence[JobResult], key: str) -> list[float]:
    return [100 * j.metrics[key] for j in jobs if key in j.metrics]


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """Tables per data set and recipe, comparisons with intervals, masking checks, runs."""
    done = [j for j in jobs if j.ok]
    failed = [j for j in jobs if not j.ok]
    groups: Groups = defaultdict(list)
    for job in done:
        groups[_data(job), _recipe(job), _model(job)].append(job)
    checks = {k: v for k, v in getattr(jobs, "bench", {}).items() if k.startswith("checks_")}
    lines = [
        "# Robustness of ODE-Nets: CNN vs ODENet vs TisODE (reproduction report)",
        "",
        f"Written by `make reproduce-robust budget={budget}` from the runs listed at the end.",
        "Accuracy in % on attacked test images (the same images for every model of a data",
        "set), mean ± sample std over training seeds; sigma on the 0-255 scale, epsilon on",
        "[0, 1]. Gradient attacks differentiate through each model's own solver (white box)"
        + (
            "; the masking checks below attack the ODE nets through other solvers and by "
            "transfer as well."
            if checks
            else "."
        ),
        "",
        f"- Budget: `{budget}`; {len(done)} runs finished, {len(failed)} failed"
        + _pending(budget, len(done) + len(failed))
        + ".",
        f"- Device: {device_label(done)}.",
    ]
    for data in sorted({d for d, _, _ in groups}, key=_data_order):
        # One line per distinct setting of the data set's runs, naming the models that
        # share it (recipes and epochs may differ between models of one budget).
        by_setting: dict[str, list[str]] = {}
        for (d, _, model), group_jobs in sorted(groups.items(), key=_group_order):
            for text in (_setting(run_config(j)) for j in group_jobs if d == data):
                models = by_setting.setdefault(text, [])
                models += [] if model in models else [model]
        name = DATA_NAMES.get(data, data)
        for text, models in by_setting.items():
            who = "" if len(by_setting) == 1 else f" ({', '.join(models)})"
            lines.append(f"- {name}{who}: {text}.")
    lines += ["", *_floor_section(groups), *_claims_section(groups)]
    for data in sorted({d for d, _, _ in groups}, key=_data_order):
        recipes = sorted({r for d, r, _ in groups if d == data}, key=_recipe_order)
        for recipe in recipes:
            lines += _recipe_section(groups, data, recipe, report_dir)
        if any(m == "TisODE" for d, _, m in groups if d == data):
            lines += _tisode_section(groups, data, recipes)
    lines += _masking_section(checks, report_dir)
    lines += _differences(done, groups, checks)
    labels = [(_run_label(j), j.output_dir) for j in done]
    return "\n".join(lines + runs_section(labels, failed))


def _data_order(data: str) -> tuple[int, str]:
    """The study's data set first, then the others in `DATA_NAMES` order."""
    order = list(DATA_NAMES)
    return (order.index(data) if data in order else len(order), data)


def _recipe_order(recipe: str) -> tuple[int, str]:
    order = ["clean", "gaussian", "pgd", "fgsm"]
    return (order.index(recipe) if recipe in order else len(order), recipe)


RECIPES = {
    "clean": "clean training",
    "gaussian": "Gaussian-noise augmentation",
    "pgd": "PGD adversarial training",
    "fgsm": "FGSM adversarial training",
}
# The study's table for a recipe, where it has one.
STUDY_TABLES = {"clean": "first", "gaussian": "second"}
# Images in each data set's official test set (the offline split divides it).
TEST_SET_SIZE = {"mnist": 10_000, "fashion_mnist": 10_000, "svhn": 26_032}


def _training_sigma(groups: Groups, data: str, recipe: str) -> str:
    """`, sigma 100`: the Gaussian recipe's training noise, from the runs' configs."""
    sigmas = set()
    for (d, r, _), jobs in groups.items():
        for job in jobs if (d, r) == (data, recipe) else []:
            cfg = run_config(job)
            perturbation = cfg.recipe.get("perturbation") if cfg is not None else None
            if perturbation is not None and "sigma" in perturbation:
                sigmas.add(float(perturbation.sigma))
    return f", sigma {'/'.join(f'{v:g}' for v in sorted(sigmas))}" if sigmas else ""


def _recipe_title(data: str, recipe: str, groups: Groups | None = None) -> str:
    """The recipe's title (with its training sigma, read from `groups`) and the study's
    table it reproduces; for a data set the study did not use, that table is named as the
    setting only."""
    title = RECIPES.get(recipe, recipe) + (_training_sigma(groups, data, recipe) if groups else "")
    table = STUDY_TABLES.get(recipe)
    if table is None:
        return title
    if data in STUDY:
        return f"{title} (the study's {table} table)"
    return (
        f"{title} (the setting of the study's {table} table; the study has no "
        f"{DATA_NAMES.get(data, data)} numbers)"
    )


def _floor_section(groups: Groups) -> list[str]:
    rows = []
    for (data, recipe, model), jobs in sorted(groups.items(), key=_group_order):
        clean = _acc(jobs, "test/acc")
        val = _acc(jobs, "val/acc")
        floor = FLOORS.get(data)
        meets = "n/a" if floor is None or not clean else _yes(min(clean) >= 100 * floor)
        val_meets = "n/a" if floor is None or not val else _yes(min(val) >= 100 * floor)
        params = {int(j.metrics["model/params"]) for j in jobs if "model/params" in j.metrics}
        minutes = [s / 60 for s in (j.run.step_seconds for j in jobs) if s is not None]
        epochs = sorted({j.run.epochs for j in jobs})
        rows.append(
            [
                DATA_NAMES.get(data, data),
                recipe,
                model,
                ", ".join(f"{p:,}" for p in sorted(params)) or "–",
                _solve(jobs),
                ", ".join(map(str, epochs)),
                fmt_mean_std(minutes, spec=".1f"),
                f"{min(val):.2f}" if val else "–",
                val_meets,
                fmt_mean_std(clean, spec=".2f"),
                f"{min(clean):.2f}" if clean else "–",
                "–" if floor is None else f"{100 * floor:.0f}",
                meets,
            ]
        )
    return [
        "## Clean accuracy against the floor",
        "",
        "Robust accuracy is only comparable between models that classify clean images",
        "equally well. The floors are ours (the study prints no clean accuracy): 98 % on",
        "MNIST, 88 % on Fashion-MNIST; each model must reach its floor on every seed",
        "(`lowest`). Epochs are chosen on validation accuracy (the final epoch's, on the",
        "held-out validation split): a model whose lowest seed is under its floor there,",
        "or whose validation error still falls in its last quarter of epochs (see the",
        "validation curves), trains longer; ODENet and the CNN of one recipe are given one",
        "schedule, TisODE may keep a shorter one (the epochs column). A comparison",
        "involving a model under its floor on the test images on any seed (`met`) is",
        "marked 'under the floor' and not counted. Test accuracy never chooses epochs: it",
        "is read for this table, that gate and the attacked columns; a run trained on from",
        "its last checkpoint is tested again at its final epoch, and only that reading is",
        "shown. Epochs as",
        "logged; training minutes per run are the measured optimizer-step times summed",
        "over the per-epoch history (each epoch's mean step time times its steps), so a",
        "run stopped and resumed counts every kept epoch once; validation, data loading",
        "and the attacked test are not in them.",
        "",
        markdown_table(
            [
                "data",
                "recipe",
                "model",
                "parameters",
                "ODE solve",
                "epochs",
                "training minutes per run",
                "lowest val acc",
                "val floor met",
                "clean test acc (mean ± std)",
                "lowest",
                "floor",
                "met",
            ],  # fmt: skip
            rows,
        ),
        "",
        *_floor_misses(groups),
        *_unequal_epochs(groups),
    ]


def _pending(budget: str, ended: int) -> str:
    """`; 3 of the budget's 9 runs not finished yet: a partial report` where the budget's
    sweeps plan more runs than ended."""
    planned = planned_jobs(BUDGETS[budget]) if budget in BUDGETS else 0
    if planned <= ended:
        return ""
    return f"; {planned - ended} of the budget's {planned} runs not finished yet: a partial report"


def _test_images(cfg) -> int | None:
    """How many test images a run's clean accuracy was read on, from its config."""
    if cfg is None:
        return None
    limit = cfg.trainer.get("limit_test_batches")
    if isinstance(limit, int) and limit >= 1:
        return int(limit * cfg.data.eval_batch_size)
    if cfg.data.get("offline_test_split"):
        return int(cfg.data.test_size)
    return TEST_SET_SIZE.get(str(cfg.data.get("dataset")))


def _floor_misses(groups: Groups) -> list[str]:
    """Computed: each run whose clean test reading is under its floor, with the exact 95 %
    interval of that reading (does the test sample alone allow the floor?) and its
    validation accuracy. The gate stays the reading itself."""
    misses = []
    for (data, recipe, model), jobs in sorted(groups.items(), key=_group_order):
        floor = FLOORS.get(data)
        for job in jobs:
            acc = job.metrics.get("test/acc")
            if floor is None or acc is None or acc >= floor:
                continue
            n = _test_images(run_config(job))
            text = (
                f"{model} ({DATA_NAMES.get(data, data)}, {recipe}) seed "
                f"{job.overrides.get('seed', '?')}: {100 * acc:.2f} % clean on the test images"
            )
            if n:
                correct = round(acc * n)
                short = math.ceil(floor * n - 1e-9) - correct
                low, high = binomial_interval(correct, n)
                holds = (
                    "holds the floor, so the test sample cannot tell this run from one at it"
                    if low <= 100 * floor <= high
                    else "lies below the floor"
                )
                text += (
                    f" ({correct} of {n}, {short} image{'' if short == 1 else 's'} short of"
                    f" {100 * floor:.0f} %; its exact 95 % interval [{low:.1f}, {high:.1f}]"
                    f" {holds})"
                )
            if "val/acc" in job.metrics:
                text += f", {100 * job.metrics['val/acc']:.2f} % on validation"
            misses.append(text)
    if not misses:
        return []
    return [
        "Under the floor on the test images (the gate uses the reading itself, whatever",
        "its interval): " + "; ".join(misses) + ".",
        "",
    ]


# The study's claims the comparisons test: a is more robust than b.
CLAIMS = (("ODENet", "CNN"), ("TisODE", "ODENet"))


def _claims_section(groups: Groups) -> list[str]:
    """Computed: each of the study's claims against our intervals, setting by setting, with
    the totals over a data set's settings."""
    lines = [
        "## The study's claims against ours",
        "",
        "The study finds ODENet more robust than a CNN of the same size, and TisODE more",
        "robust than ODENet. From the 95 % intervals of each recipe's section below",
        "(perturbations only; rows answered 'at the floor' or 'under the floor' not counted):",
        "",
    ]
    found = False
    for a_name, b_name in CLAIMS:
        before = len(lines)
        for data in sorted({d for d, _, _ in groups}, key=_data_order):
            totals: dict[str, int] = defaultdict(int)
            agreement: dict[str, int] = defaultdict(int)
            settings = judged_settings = 0
            for recipe in sorted({r for d, r, _ in groups if d == data}, key=_recipe_order):
                runs = [j for m in MODELS.values() for j in groups.get((data, recipe, m), [])]
                paper = STUDY.get(data, {}).get(recipe, {})
                rows = _comparison_rows(groups, data, recipe, a_name, b_name, _columns(runs),
                                        paper)  # fmt: skip
                rows = [r for r in rows if r[0] != "clean"]
                if not rows:
                    continue
                found, settings = True, settings + 1
                named = _tally(rows)
                for k, v in named.items():
                    totals[k] += len(v)
                studied = [r for r in rows if r[5] != "–"]
                agree = sum(r[6] == "yes" for r in studied)
                against = sum(r[6] == "**no**" for r in studied)
                outside = sum(r[7] == "**no**" for r in studied)
                agreement["agree"] += agree
                agreement["against"] += against
                agreement["studied"] += len(studied)
                agreement["outside"] += outside
                skipped = len(rows) - sum(len(named[k]) for k in VERDICTS)
                judged_settings += skipped < len(rows)
                lines.append(
                    f"- {a_name} over {b_name}, {DATA_NAMES.get(data, data)}, "
                    f"{_recipe_title(data, recipe, groups).split(' (')[0]}: "
                    + (
                        _verdict_counts(named) + (f"; {_not_counted(named)}" if skipped else "")
                        if skipped < len(rows)
                        else f"no perturbation judged; {_not_counted(named)}"
                    )
                    + (
                        f"; the study's direction confirmed under {agree} of the "
                        f"{len(studied)} it reports, contradicted under {against}; the "
                        f"study's difference lies outside our 95 % interval under {outside}."
                        if studied and skipped < len(rows)
                        else "."
                        if studied
                        else _ordering_text(a_name, b_name, named, data, recipe)
                        if skipped < len(rows)
                        else "."
                    )
                )
            judged = sum(totals[k] for k in VERDICTS)
            # A total over one judged recipe would repeat that recipe's line.
            if judged_settings > 1:
                which = (
                    f"all {settings} recipes"
                    if judged_settings == settings
                    else f"the {judged_settings} of {settings} recipes with a judged perturbation"
                )
                lines.append(
                    f"- **{a_name} over {b_name}, {DATA_NAMES.get(data, data)}, "
                    f"{which}**: more robust under {totals['yes']} of {judged} "
                    f"perturbations, less robust under {totals['no']}, within noise under "
                    f"{totals['within noise']} (about {0.05 * judged:.1f} of {judged} "
                    "intervals would exclude zero by chance alone)"
                    + (
                        f"; the study's direction confirmed under {agreement['agree']} of "
                        f"{agreement['studied']} of its numbers, contradicted under "
                        f"{agreement['against']}; its difference lies outside our 95 % "
                        f"interval under {agreement['outside']}."
                        if agreement["studied"]
                        else "."
                    )
                )
        if len(lines) > before:
            lines.append("")
    return lines if found else []


VERDICTS = ("yes", "no", "within noise")


def _study_orders(a_name: str, b_name: str, recipe: str) -> tuple[str, bool]:
    """The study's table that orders the two models for `recipe` (its MNIST table of that
    recipe where it has both, else its third table) and whether that table has `a_name`
    at or above `b_name` in every column."""
    paper = PAPER.get(recipe, {})
    if a_name in paper and b_name in paper:
        columns = paper[a_name].keys() & paper[b_name].keys()
        return STUDY_TABLES[recipe], all(paper[a_name][c] >= paper[b_name][c] for c in columns)
    pairs = zip(PAPER_TISODE[a_name], PAPER_TISODE[b_name], strict=True)
    return "third", all(a >= b for a, b in pairs)


def _ordering_text(
    a_name: str, b_name: str, named: dict[str, list[str]], data: str, recipe: str
) -> str:
    """Where the study prints no numbers for a setting: the ordering of the two models in
    the study's table of the same recipe (else its third table, labels aside) against our
    verdicts."""
    table, orders = _study_orders(a_name, b_name, recipe)
    if not orders:
        return "; no comparable study numbers in this setting."
    where = "" if data == "mnist" else " (an MNIST table)"
    return (
        f"; no study numbers in this setting, but the study's {table} table{where} has "
        f"{a_name} at or above {'the ' if b_name == 'CNN' else ''}{b_name} in every column: "
        "that ordering confirmed under "
        f"{_count(named['yes'])}, contradicted under {_count(named['no'])}."
    )


def _tally(rows: list[list[str]]) -> dict[str, list[str]]:
    """The perturbations of `_comparison_rows` rows by answer: the verdicts (`yes`, `no`,
    `within noise`), then the answers that are none (`UNJUDGED`, `n/a`)."""
    return {k: [r[0] for r in rows if r[4] == k] for k in (*VERDICTS, *UNJUDGED, "n/a")}


def _not_counted(named: dict[str, list[str]]) -> str:
    """`2 not counted (both models at the floor: PGD .3; a model under its clean-accuracy
    floor: FGSM .5)`."""
    parts = [
        f"{why}: {', '.join(named[k])}"
        for k, why in (
            ("at the floor", "both models at the floor"),
            ("under the floor", "a model under its clean-accuracy floor"),
            ("n/a", "fewer than 2 paired seeds, so no interval"),
        )
        if named[k]
    ]
    total = sum(len(named[k]) for k in (*UNJUDGED, "n/a"))
    return f"{total} not counted ({'; '.join(parts)})"


def _verdict_counts(named: dict[str, list[str]]) -> str:
    """`more robust under 1 (PGD .2) of 7, less robust under 0, within noise under 6 (...)`."""
    judged = sum(len(named[k]) for k in VERDICTS)
    return (
        f"more robust under {_count(named['yes'])} of {judged}, less robust under "
        f"{_count(named['no'])}, within noise under {_count(named['within noise'])}"
    )


def _unequal_epochs(groups: Groups) -> list[str]:
    """Computed: the recipes whose models trained for different numbers of epochs."""
    settings: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for (data, recipe, model), jobs in sorted(groups.items(), key=_group_order):
        settings[data, recipe][model] = "/".join(map(str, sorted({j.run.epochs for j in jobs})))
    unequal = [
        f"{DATA_NAMES.get(data, data)}, {recipe}: "
        + ", ".join(f"{model} {epochs}" for model, epochs in models.items())
        for (data, recipe), models in settings.items()
        if len(set(models.values())) > 1
    ]
    if not unequal:
        return []
    return [
        "Epochs differ within a recipe (whether each model met its floor and reached a",
        "plateau: the table above and the validation curves):",
        "; ".join(unequal) + ".",
        "",
    ]


def _group_order(item: tuple[tuple[str, str, str], Any]) -> tuple:
    (data, recipe, model), _ = item
    return (_data_order(data), _recipe_order(recipe), list(MODELS.values()).index(model))


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _recipe_section(groups: Groups, data: str, recipe: str, report_dir: Path) -> list[str]:
    models = [m for m in MODELS.values() if groups.get((data, recipe, m))]
    columns = _columns([j for m in models for j in groups[data, recipe, m]])
    paper = STUDY.get(data, {}).get(recipe, {})
    rows = []
    for model in models:
        if paper.get(model):
            spread = STUDY_STD.get(data, {}).get(recipe, {}).get(model, {})
            rows.append(
                [f"{model} (study)", "–", *(_paper_cell(paper[model], c, spread) for c in columns)]
            )
        runs = groups[data, recipe, model]
        cells = [fmt_mean_std(_acc(runs, f"test/acc/{c}"), spec=".1f") for c in columns]
        rows.append(
            [
                f"**{model} (ours, n={len(runs)})**",
                fmt_mean_std(_acc(runs, "test/acc"), spec=".1f"),
                *cells,
            ]
        )
    lines = [
        f"## {DATA_NAMES.get(data, data)}: {_recipe_title(data, recipe, groups)}",
        "",
        markdown_table(["model", "clean", *map(_label, columns)], rows),
        "",
        *(_reach(groups, data, recipe, models, columns) if recipe == "clean" else []),
    ]
    levels = [
        _levels(model, groups[data, recipe, model], paper[model], columns)
        for model in models
        if paper.get(model)
    ]
    if any(levels):
        lines += [
            "Against the study's levels (the 95 % t interval of our mean over seeds, against",
            "the study's mean):",
            "",
            *(f"- {text}" for text in levels if text),
            "",
        ]
    for a_name, b_name in (("ODENet", "CNN"), ("TisODE", "ODENet"), ("TisODE", "CNN")):
        lines += _comparison(groups, data, recipe, a_name, b_name, columns, paper)
    figure = report_dir / f"{data}_{recipe}_accuracy.png"
    if _accuracy_figure(groups, data, recipe, columns, paper, figure):
        lines += [f"![accuracy under attack]({report_dir.name}/{figure.name})", ""]
    curves = {}
    for m in models:
        runs = sorted(groups[data, recipe, m], key=lambda j: str(j.overrides.get("seed", "")))
        seeds = ", ".join(str(j.overrides.get("seed", "?")) for j in runs)
        curves[f"{m} (seed{'s' if len(runs) > 1 else ''} {seeds})"] = [
            (*j.run.epoch_series("val/error"), validation_images(j.run)) for j in runs
        ]
    lines += validation_section(
        curves, report_dir / f"{data}_{recipe}_validation.png", "### Validation error over training"
    )
    return lines


# A column within this many points of every model's clean accuracy barely perturbs.
BARELY = 1.0


def _reach(
    groups: Groups, data: str, recipe: str, models: list[str], columns: list[str]
) -> list[str]:
    """Computed: how far the attack strengths take clean-trained accuracy (the mean over
    the models at each kind's weakest and strongest strength), and the columns that say
    nothing: every model at the floor, or every model within `BARELY` points of clean.
    Only columns every model logged count."""

    def mean(model: str, key: str) -> float:
        return mean_std(_acc(groups[data, recipe, model], key))[0]  # nan without values

    clean = {m: mean(m, "test/acc") for m in models}
    means = {(m, c): mean(m, f"test/acc/{c}") for m in models for c in columns}
    shared = [c for c in columns if all(math.isfinite(means[m, c]) for m in models)]
    if not shared or not all(math.isfinite(v) for v in clean.values()):
        return []
    spans = []
    for kind in KINDS:
        names = [c for c in shared if c.startswith(f"{kind}_")]
        if names:
            ends = [sum(means[m, c] for m in models) / len(models) for c in (names[0], names[-1])]
            spans.append(
                f"{KIND_NAMES[kind]} from {ends[0]:.1f} % ({_label(names[0])}) to "
                f"{ends[1]:.1f} % ({_label(names[-1])})"
            )
    floor = [_label(c) for c in shared if all(means[m, c] < AT_FLOOR for m in models)]
    barely = [_label(c) for c in shared if all(clean[m] - means[m, c] < BARELY for m in models)]
    average = sum(clean.values()) / len(clean)
    over = f"mean over the {len(models)} models" if len(models) > 1 else "one model"
    return [
        f"Reach of the strengths ({over}, clean {average:.1f} %): "
        + ", ".join(spans)
        + f". Every model at the floor (under {AT_FLOOR:g} %): {', '.join(floor) or 'none'}; "
        f"every model within {BARELY:g} point of its clean accuracy: "
        f"{', '.join(barely) or 'none'}.",
        "",
    ]


def _levels(model: str, runs: list[JobResult], study: dict[str, float], columns: list[str]) -> str:
    """Where our mean accuracy lies below, above or around the study's, per perturbation."""
    below, above, around = [], [], []
    for column in columns:
        ours = _acc(runs, f"test/acc/{column}")
        if column not in study or len(ours) < 2:
            continue
        c = compare(ours, [study[column]] * len(ours), a_name="ours", b_name="study",
                    metric=column, higher_is_better=True)  # fmt: skip
        cell = f"{_label(column)} ({c.mean_diff + study[column]:.1f} vs {study[column]:.1f})"
        {"worse": below, "better": above}.get(c.outcome, around).append(cell)
    if not below + above + around:
        return ""
    parts = [
        f"{word} under {', '.join(cells)}"
        for word, cells in (("below", below), ("above", above), ("consistent", around))
        if cells
    ]
    return f"{model}: ours is " + "; ".join(parts) + "."


def _paper_cell(values: dict[str, float], column: str, spread: dict[str, float]) -> str:
    if column not in values:
        return "–"
    return f"{values[column]:.1f}" + (f" ± {spread[column]:.1f}" if column in spread else "")


def _comparison(
    groups: Groups,
    data: str,
    recipe: str,
    a_name: str,
    b_name: str,
    columns: list[str],
    paper: dict[str, dict[str, float]],
) -> list[str]:
    """`a - b` per perturbation, paired over seeds, with the computed verdict and whether
    it agrees with the study's sign."""
    rows = _comparison_rows(groups, data, recipe, a_name, b_name, columns, paper)
    if not rows:
        return []
    header = [
        "perturbation",
        f"{a_name} - {b_name} (points)",
        "95 % CI",
        "n",
        f"{a_name} more robust",
        f"study ({a_name} - {b_name})",
        "agrees with the study's direction",
        "study's difference in our CI",
    ]
    # Without a single number of the study's beside ours, its three columns say nothing.
    shown = 5 if all(r[5] == "–" for r in rows) else len(header)
    under = _under_floor(groups, data, recipe, (a_name, b_name))
    return [
        f"{a_name} against {b_name}: paired t interval over training seeds (df = n - 1; seed "
        "i of one model against seed i of the other, pairs fixed before training, which is "
        "valid whether or not the two runs of a seed are correlated) on one fixed set of "
        "attacked test images; 'within noise' when the 95 % interval holds zero, "
        f"'at the floor' when both are below {AT_FLOOR:g} %; no correction across the "
        "intervals of a table."
        + (
            f" Under the floor: {' and '.join(under)} "
            + ("misses its" if len(under) == 1 else "miss their")
            + " clean-accuracy floor on some seed, so every difference here is confounded by "
            "clean accuracy and none is counted."
            if under
            else ""
        ),
        "",
        markdown_table(header[:shown], [r[:shown] for r in rows]),
        "",
        _summary(a_name, b_name, rows[1:] if rows[0][0] == "clean" else rows),
        "",
    ]


def _comparison_rows(
    groups: Groups,
    data: str,
    recipe: str,
    a_name: str,
    b_name: str,
    columns: list[str],
    paper: dict[str, dict[str, float]],
) -> list[list[str]]:
    """Table rows of `_comparison`: perturbation, difference, interval, n, answer, the
    study's difference, agreement with its direction, whether our interval holds it."""
    a_jobs, b_jobs = groups.get((data, recipe, a_name), []), groups.get((data, recipe, b_name), [])
    if not a_jobs or not b_jobs:
        return []
    confounded = bool(_under_floor(groups, data, recipe, (a_name, b_name)))
    rows = []
    for column in [None, *columns]:
        key = "test/acc" if column is None else f"test/acc/{column}"
        label = "clean" if column is None else _label(column)
        c = compare_jobs(
            a_jobs, b_jobs, key, a_name=a_name, b_name=b_name, metric=f"accuracy ({label})",
            higher_is_better=True, scale=100,
        )  # fmt: skip
        if not c.n:
            continue
        answer = {"better": "yes", "worse": "no"}.get(c.outcome, c.outcome)
        means = [mean_std(_acc(jobs, key))[0] for jobs in (a_jobs, b_jobs)]
        if answer != "n/a" and confounded:
            answer = "under the floor"
        elif answer != "n/a" and column is not None and all(m < AT_FLOOR for m in means):
            answer = "at the floor"
        study = None
        if (
            column is not None
            and column in paper.get(a_name, {})
            and column in paper.get(b_name, {})
        ):
            study = paper[a_name][column] - paper[b_name][column]
        inside = (
            "–" if study is None or not math.isfinite(c.low) else _yes(c.low <= study <= c.high)
        )
        # A bound that one decimal would print as 0.0 gets two, so its sign shows.
        near_zero = any(0 < abs(b) < 0.05 for b in (c.low, c.high) if math.isfinite(b))
        rows.append(
            [
                label,
                *(_no_negative_zero(cell) for cell in c.cells(".2f" if near_zero else ".1f")[:3]),
                answer,
                "–" if study is None else f"{study:+.1f}",
                _agreement(answer if answer in UNJUDGED else c.outcome, study),
                inside,
            ]  # fmt: skip
        )
    return rows


# Answers that are not verdicts: both models broken, or one under its clean-accuracy floor.
UNJUDGED = ("at the floor", "under the floor")


def _under_floor(groups: Groups, data: str, recipe: str, models: Sequence[str]) -> list[str]:
    """The models of `models` whose clean test accuracy is under the data set's floor on
    some seed: a comparison involving one is confounded by clean accuracy."""
    floor = FLOORS.get(data)
    if floor is None:
        return []
    return [
        m
        for m in models
        if (clean := _acc(groups.get((data, recipe, m), []), "test/acc"))
        and min(clean) < 100 * floor
    ]


def _agreement(outcome: str, study: float | None) -> str:
    if study is None or outcome == "n/a":
        return "–"
    if outcome == "within noise":
        return "not confirmed (within noise)"
    if outcome == "at the floor":
        return "cannot tell (both at the floor)"
    if outcome == "under the floor":
        return "cannot tell (under the floor)"
    ours_higher = outcome == "better"
    if study == 0:
        return "no (the study has a tie)"
    return "yes" if ours_higher == (study > 0) else "**no**"


def _summary(a_name: str, b_name: str, rows: list[list[str]]) -> str:
    """Computed sentences: under which perturbations `a` is more robust, less, or within
    noise; where that agrees with the study; and how many intervals chance alone would
    put off zero."""
    named = _tally(rows)
    if len(named["n/a"]) == len(rows):
        return f"Verdict: no interval with fewer than 2 paired seeds ({a_name} vs {b_name})."
    studied = [r for r in rows if r[5] != "–"]
    agree = [r[0] for r in studied if r[6] == "yes"]
    against = [r[0] for r in studied if r[6] == "**no**"]
    unsure = [r[0] for r in studied if r[0] not in agree + against]
    outside = [r[0] for r in studied if r[7] == "**no**"]
    study = (
        f" Of the {len(studied)} perturbations the study reports, ours agrees with its "
        f"direction under {_count(agree)}, contradicts it under {_count(against)} and cannot "
        f"tell under {_count(unsure)}; the study's difference lies outside our 95 % interval "
        f"under {_count(outside)} of {len(studied)}."
        if studied
        else ""
    )
    floor = (
        f" Not counted, both models at the floor: {', '.join(named['at the floor'])}."
        if named["at the floor"]
        else ""
    ) + (
        " Not counted, a model under its clean-accuracy floor on the test images: "
        f"{_count(named['under the floor'])}."
        if named["under the floor"]
        else ""
    )
    judged = len(rows) - sum(len(named[k]) for k in (*UNJUDGED, "n/a"))
    if not judged:
        return f"Verdict: no perturbation judged ({a_name} vs {b_name}).{floor}"
    chance = (
        f" With {judged} intervals at 95 %, about {0.05 * judged:.1f} would exclude zero by "
        "chance alone."
        if judged
        else ""
    )
    return (
        f"Verdict, in this budget's setting: {a_name} is more robust than {b_name} under "
        f"{_count(named['yes'])} of {judged} perturbations, less robust under "
        f"{_count(named['no'])}, within noise under {_count(named['within noise'])}.{floor}"
        f"{chance}{study}"
    )


def _count(names: list[str]) -> str:
    """`2 (FGSM .3, PGD .2)`, or `0`."""
    return f"{len(names)} ({', '.join(names)})" if names else "0"


def _no_negative_zero(text: str) -> str:
    """`-0.0` (a rounded tiny negative) printed as `0.0`."""
    return re.sub(r"(?<![\d.])-0\.0(?![\d])", "0.0", text)


def _tisode_section(groups: Groups, data: str, recipes: list[str]) -> list[str]:
    """The study's third table (TisODE against ODENet and CNN): on MNIST its numbers as
    printed beside ours, on every data set the ordering it implies checked against ours."""
    name = DATA_NAMES.get(data, data)
    studied = data == "mnist"  # the third table is MNIST's only
    trained = {r: [m for m in MODELS.values() if groups.get((data, r, m))] for r in recipes}
    adversarial = trained.get("pgd", [])
    if not adversarial:
        pgd_text = "No adversarially trained runs in this budget."
    else:
        pgd_text = (
            f"Our adversarially trained runs (`recipe=pgd`): {', '.join(adversarial)}"
            + ("" if "TisODE" in adversarial else " (no TisODE run is adversarially trained)")
            + "; the other recipes' rows are shown for reference."
        )
    if studied:
        title = "the study's third table"
        intro = [
            "The study's numbers as printed in the summary we reproduce from, under the",
            'heading "Results in the setting of Adversarial Training"; their column labels',
            "look shifted (the CNN's 98.4 under FGSM .3), so their values are shown, not",
            "compared; the ordering they imply is checked below.",
        ]
        wanted = ["gaussian_100", "fgsm_0.3", "fgsm_0.5", "pgd_0.3"]
        header = PAPER_TISODE["columns"]
        rows = [
            [f"{m} (study, as printed)", "–", *(f"{v:.1f}" for v in PAPER_TISODE[m])]
            for m in MODELS.values()
        ]
    else:
        title = f"the setting of the study's third table; the study has no {name} numbers"
        intro = [
            f"Our models on {name} per recipe; the ordering of the study's MNIST table is",
            "checked below.",
        ]
        wanted = _columns([j for (d, _, _), js in groups.items() if d == data for j in js])
        header = [_label(c) for c in wanted]
        rows = []
    lines = [
        f"## {name}: TisODE against ODENet and CNN ({title})",
        "",
        *intro,
        pgd_text,
        "TisODE - ODENet and TisODE - CNN, paired over seeds, are in each recipe's section.",
        "",
    ]
    for recipe in recipes:
        for model in trained[recipe]:
            runs = groups[data, recipe, model]
            rows.append(
                [
                    f"**{model}, {recipe} (ours, n={len(runs)})**",
                    fmt_mean_std(_acc(runs, "test/acc"), spec=".1f"),
                    *(fmt_mean_std(_acc(runs, f"test/acc/{c}"), spec=".1f") for c in wanted),
                ]
            )
    lines += [markdown_table(["model", "clean", *header], rows), ""]
    # Whatever its labels, the table has TisODE at or above ODENet and the CNN in every
    # column: that ordering is checked against ours, perturbation by perturbation.
    columns = range(len(PAPER_TISODE["columns"]))
    best = [max(PAPER_TISODE["ODENet"][i], PAPER_TISODE["CNN"][i]) for i in columns]
    ordered = all(PAPER_TISODE["TisODE"][i] >= best[i] for i in columns)
    ties = [PAPER_TISODE["columns"][i] for i in columns if PAPER_TISODE["TisODE"][i] == best[i]]
    checks = []
    for recipe in recipes:
        runs = [j for m in MODELS.values() for j in groups.get((data, recipe, m), [])]
        for other in ("ODENet", "CNN"):
            result = _comparison_rows(groups, data, recipe, "TisODE", other, _columns(runs), {})
            named = _tally([r for r in result if r[0] != "clean"])
            if any(named[k] for k in VERDICTS):
                checks.append(
                    f"- {_recipe_title(data, recipe, groups)}, TisODE against {other}: "
                    f"{_verdict_counts(named)}; the study's ordering confirmed under "
                    f"{_count(named['yes'])}, contradicted under {_count(named['no'])}."
                )
    if ordered and checks:
        tie_text = (
            f" (tied with the better of the two under {', '.join(ties)} as printed)" if ties else ""
        )
        lines += [
            "The study's table has TisODE at or above ODENet and the CNN in every column",
            f"whatever the labels{tie_text}. Ours, from the paired intervals of each recipe's",
            "section:",
            "",
            *checks,
            "",
        ]
    return lines


def _masking_section(checks: dict[str, dict[str, Any]], report_dir: Path) -> list[str]:
    lines = ["## Gradient-masking checks", ""]
    if not checks:
        return [
            *lines,
            "No masking-check records in this budget (`experiments/robust_checks.py` writes",
            "them; budgets `cpu`, its `cpu_*` chunks, `gpu`, `svhn` and `paper` run it after",
            "their sweeps).",
            "",
        ]
    unfinished = {name: r for name, r in checks.items() if not r.get("complete")}
    if unfinished:
        lines += [
            f"Not finished ({len(unfinished)}; `robust_checks.py` resumes them; their "
            "finished stages are in the tables below): "
            + ", ".join(
                f"`{name}` ({', '.join(_stages_left(r)) or 'nothing'} to run)"
                for name, r in sorted(unfinished.items())
            )
            + ".",
            "",
        ]
    # Each table shows every record that holds its stage, finished or not.
    records = sorted(
        (r for r in checks.values() if any(stage in r for stage in CHECK_STAGES)),
        key=_record_order,
    )
    if not records:
        return lines

    def having(stage: str) -> list[dict[str, Any]]:
        return [r for r in records if stage in r]

    lines += _retrained_text(records)
    lines += _solver_table(records)
    if having("square"):
        lines += _square_table(having("square"))
    if having("curve"):
        lines += _curve_table(having("curve"))
        figure = report_dir / "pgd_curve.png"
        if _curve_figure(having("curve"), figure):
            lines += [f"![PGD against steps and restarts]({report_dir.name}/{figure.name})", ""]
    if having("grid"):
        lines += _grid_table(having("grid"))
    if having("independent") or not unfinished:
        lines += _independent_table([r for r in records if r.get("complete") or "independent" in r])
    return lines


# The stages of a masking-check record, in the order `robust_checks.py` runs them (ODE nets
# only: solvers).
CHECK_STAGES = ("grid", "curve", "square", "solvers", "independent")


def _stages_left(r: dict[str, Any]) -> list[str]:
    return [
        stage
        for stage in CHECK_STAGES
        if stage not in r and (stage != "solvers" or r.get("model") != "CNN")
    ]


def _retrained_text(records: list[dict[str, Any]]) -> list[str]:
    """Which checked models were trained again (their checkpoints are never committed) and
    whether every metric of the run came back."""
    again = [r for r in records if "retrained" in r]
    if not again:
        return []
    same = [r for r in again if not r["retrained"]["differing"]]
    differ = [r for r in again if r["retrained"]["differing"]]
    text = (
        f"{len(again)} of the {len(records)} checked models were trained again from their "
        "committed config and seed before the checks (checkpoints are not committed, and "
        "these were gone)"
    )
    if same:
        text += (
            f"; {len(same)} reproduced every one of their recorded metrics (timings aside) "
            "exactly ("
            + ", ".join(f"{r['retrained']['metrics_compared']} of {_name(r)}" for r in same)
            + ")"
        )
    if not differ:
        text += ", so the checked models behave as the ones the tables report"
    else:
        parts = []
        for r in differ:
            differing = r["retrained"]["differing"]
            # Accuracies in points: how far the retrained model is from the committed one.
            gaps = [
                100 * abs(new - old)
                for key, (old, new) in differing.items()
                if "/acc" in key and key.startswith("test/")
            ]
            size = f", test accuracies up to {max(gaps):.1f} points apart" if gaps else ""
            parts.append(
                f"{_name(r)}: {len(differing)} of {r['retrained']['metrics_compared']}{size}"
            )
        text += (
            "; the metrics differ ("
            + "; ".join(parts)
            + "), and the tables carry the retrained ones (the weights checked; the "
            "budget's comments in `conf/reproduce/robust.yaml` give the cause where known)"
        )
    return [text + ".", ""]


def _share(fraction: float) -> str:
    """A fraction in %, two decimals; a nonzero share under 0.01 % as `<0.01`."""
    return "<0.01" if 0 < fraction < 5e-5 else f"{100 * fraction:.2f}"


def _independent_table(records: list[dict[str, Any]]) -> list[str]:
    """Our FGSM and PGD beside the Adversarial Robustness Toolbox's, with computed verdicts."""
    found = [r for r in records if "missing" not in r.get("independent", {"missing": ""})]
    left = [r for r in records if r not in found]
    lines = ["### Against an independent implementation", ""]
    missing = sorted({r["independent"]["missing"] for r in left if "independent" in r})
    not_compared = (
        f"Not compared ({len(left)}: "
        + ", ".join(_name(r) for r in left)
        + ("; " + "; ".join(missing) if missing else "; records made before this stage")
        + ")."
    )
    if not found:
        return [*lines, not_compared, ""]
    rows = []
    for r in found:
        i = r["independent"]
        p = i.get("pgd_weaker_p")
        rows.append(
            [
                *_who(r),
                f"{i['eps']:g}",
                str(i["images"]),
                _pct(i["fgsm"]["ours"]),
                _pct(i["fgsm"]["art"]),
                _yes(i["fgsm_same"]),
                _share(i["pgd_no_start_pixels_differ"]),
                _pct(i["pgd"]["ours"]),
                _pct(i["pgd"]["art"]),
                "–" if p is None else f"{p:.2g}",
                _yes(i["pgd_as_strong"]),
            ]
        )
    same = sum(r["independent"]["fgsm_same"] for r in found)
    strong = sum(r["independent"]["pgd_as_strong"] for r in found)
    identical = sum(r["independent"]["pgd_no_start_pixels_differ"] == 0 for r in found)
    worst = max(found, key=lambda r: r["independent"]["pgd_no_start_pixels_differ"])
    share = worst["independent"]["pgd_no_start_pixels_differ"]
    apart = (
        f" (at most {_share(share)} % of pixel values apart, {_name(worst)}: gradient components "
        "near zero can take the other sign in the other code's arithmetic)"
        if share > 0
        else ""
    )
    first = found[0]["independent"]
    return [
        *lines,
        f"Our FGSM and PGD beside {first['implementation']} (ART) on the images of the Square",
        f"check at each model's check epsilon. PGD: {first['pgd_steps']} steps of 2.5 eps /",
        f"{first['pgd_steps']}, once without a random start (the two must make the same",
        "images: the share of pixel values more than 1e-5 apart is shown) and once with one",
        "random start each. The starts differ, so ours counts as weaker only when it leaves",
        "significantly more images correct: exact McNemar test (one-sided) on the images",
        "where the two disagree, 5 %.",
        "",
        markdown_table(
            [
                *WHO,
                "eps",
                "images",
                "FGSM ours",
                "FGSM ART",
                "same",
                "PGD no start: pixels apart (%)",
                "PGD ours",
                "PGD ART",
                "p (ours weaker)",
                "as strong",
            ],  # fmt: skip
            rows,
        ),
        "",
        f"FGSM gives ART's accuracy on {same} of {len(found)} models; without a random start "
        f"PGD makes ART's images exactly on {identical} of {len(found)}{apart}; our "
        f"random-start PGD is not significantly weaker than ART's on {strong} of {len(found)}.",
        *([not_compared] if left else []),
        "",
    ]


def _curve_figure(records: list[dict[str, Any]], path: Path) -> bool:
    """PGD accuracy against steps, one panel per data set and recipe, a line per model,
    seed and restart count (solid: 1 restart, dashed: more)."""
    from odelab.plotting import plt

    panels: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        panels[r["data"], r["recipe"]].append(r)
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.4), squeeze=False)
    models = list(MODELS.values())
    for ax, ((data, recipe), recs) in zip(axes[0], panels.items(), strict=True):
        for r in recs:
            color = f"C{models.index(r['model'])}" if r["model"] in models else "k"
            restarts = sorted({p["restarts"] for p in r["curve"]["points"]})
            for k in restarts:
                pts = sorted((p["steps"], 100 * p["acc"]) for p in r["curve"]["points"]
                             if p["restarts"] == k)  # fmt: skip
                ax.plot(*zip(*pts, strict=True), marker="o", color=color,
                        linestyle="-" if k == 1 else "--",
                        label=f"{r['model']} s{r['seed']} eps {r['curve']['eps']:g}, "
                        f"{k} restart(s)")  # fmt: skip
        steps = sorted({p["steps"] for r in recs for p in r["curve"]["points"]})
        ax.set_xscale("log")
        ax.set_xticks(steps, [str(k) for k in steps])
        ax.minorticks_off()
        ax.set_ylim(0, 100)
        ax.set_title(f"{DATA_NAMES.get(data, data)}, {recipe}")
        ax.set_xlabel("PGD steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("accuracy (%)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _record_order(r: dict[str, Any]) -> tuple:
    model_order = list(MODELS.values())
    model = r.get("model", "?")
    return (
        _data_order(r.get("data", "")),
        _recipe_order(r.get("recipe", "")),
        model_order.index(model) if model in model_order else len(model_order),
        int(r.get("seed", 0)),
    )


# The table columns `_who` fills.
WHO = ["data", "recipe", "model", "seed"]


def _who(r: dict[str, Any]) -> list[str]:
    return [DATA_NAMES.get(r["data"], r["data"]), r["recipe"], r["model"], str(r["seed"])]


def _name(r: dict[str, Any]) -> str:
    """A checked model in verdict sentences: `ODENet (mnist, clean, seed 0)`."""
    return f"{r['model']} ({r['data']}, {r['recipe']}, seed {r['seed']})"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _solver_table(records: list[dict[str, Any]]) -> list[str]:
    solver = [r for r in records if "solvers" in r]
    if not solver:
        return []
    sources = list(dict.fromkeys(k for r in solver for k in r["solvers"]["accuracy"]))
    rows = []
    for r in solver:
        s = r["solvers"]
        accs = s["accuracy"]
        weakest = min(accs, key=accs.get) if accs else "–"
        worst = s.get("worst", min(s["min"], s.get("fgsm_min", s["min"])))
        rows.append(
            [
                *_who(r),
                f"{s['eps']:g}",
                _pct(s["clean_deployed"]),
                *(_pct(accs[k]) if k in accs else "–" for k in sources),
                _pct(s["min"]),
                weakest,
                f"{_pct(s['fgsm_min'])}" if "fgsm_min" in s else "–",
                f"**{_pct(worst)}**",
            ]
        )
    first = solver[0]["solvers"]
    failed = [
        f"{_name(r)}: {k}: {v}" for r in solver for k, v in r["solvers"].get("failed", {}).items()
    ]
    no_cnn = [_name(r) for r in solver if not r["solvers"].get("transfer_source", True)]
    masked, gaps, unjudged = [], [], []
    images = 0
    for r in solver:
        s = r["solvers"]
        results = [*s["accuracy"].items(), *s.get("fgsm_accuracy", {}).items()]
        own = [v for k, v in results if k == "dopri5"]
        others = [v for k, v in results if k != "dopri5"]
        who = _name(r)
        if not own or not others:
            unjudged.append(who)
            continue
        gap = round(s["images"] * (min(own) - min(others)))
        gaps.append(gap)
        images = max(images, s["images"])
        if resolvable(gap):
            masked.append(f"{who} by {gap}")
    if masked:
        verdict = (
            "Another source leaves fewer images correct than attacking through dopri5 itself, "
            "by enough images that it could be significant (exact two-sided sign test at its most "
            "favourable pairing, 5 %; per-image outcomes are not kept), so dopri5's own "
            "gradients may understate the attack on: " + "; ".join(masked) + ". Quote the "
            "worst case for these."
        )
    elif gaps:
        beats = (
            f"On none of the {len(gaps)} ODE nets does another source beat"
            if len(gaps) > 1
            else "On the one ODE net no other source beats"
        )
        verdict = (
            f"{beats} attacking through dopri5 itself by enough images that it could be "
            f"significant (by at most {max(0, *gaps)} of {images} images): no sign that the "
            "adaptive solver masks gradients."
        )
    else:
        verdict = (
            "No record has both a dopri5 result and another source's, so masking is not judged."
        )
    if masked or gaps:
        verdict += (
            " Not judged (dopri5 or every other source failed): " + ", ".join(unjudged) + "."
            if unjudged
            else ""
        )
    notes = []
    if "error_norm" in first:
        notes.append(f"dopri5's error norm: {first['error_norm']}.")
    if failed:
        notes.append("Solves that failed (left out of the minimum): " + "; ".join(failed) + ".")
    if no_cnn:
        notes.append(
            "No CNN of the same data, recipe and seed to transfer from: " + ", ".join(no_cnn) + "."
        )
    return [
        "### ODE nets deployed with an adaptive solver",
        "",
        f"Each ODE net, trained with its fixed-step solver, is deployed with {first['deployed']}",
        "and attacked by PGD and FGSM crafted through the deployed solver itself, through",
        "fixed-step rk4 and Euler surrogates of the same weights (at the training step), and by",
        f"transfer from the CNN of the same data, recipe and seed ({_attack_text(solver)}; eps per",
        f"row; {first['images']} images). The robust accuracy to quote is the worst case, the",
        "minimum over both attacks and every source; a source far below the dopri5 column",
        "means the adaptive solver's gradients were masking.",
        *([""] + notes if notes else []),
        "",
        markdown_table(
            [
                *WHO,
                "eps",
                "clean (dopri5)",
                *(f"PGD via {k}" for k in sources),
                "PGD min",
                "strongest PGD source",
                "FGSM min",
                "worst case",
            ],  # fmt: skip
            rows,
        ),
        "",
        verdict,
        "",
    ]


def _attack_text(records: list[dict[str, Any]]) -> str:
    """The solver check's PGD in words without its radius (each row states its own eps):
    `PGD, 20 steps of 2.5 eps / 20, 1 restart(s), ...`, from the records' descriptions."""
    texts = set()
    for r in records:
        s = r["solvers"]
        attack = s.get("attack", "PGD")
        match = re.fullmatch(r"PGD eps ([^,]+), (\d+) steps of ([^,]+), (.*)", attack)
        if match is None or float(match.group(1)) <= 0:
            texts.add(attack)
            continue
        eps, steps, step, rest = match.groups()
        ratio = float(step) * int(steps) / float(eps)
        texts.add(f"PGD, {steps} steps of {ratio:.3g} eps / {steps}, {rest}")
    return "; ".join(sorted(texts))


def _square_table(records: list[dict[str, Any]]) -> list[str]:
    rows, beaten = [], []
    for r in records:
        s = r["square"]
        rows.append(
            [
                *_who(r),
                f"{s['eps']:g}",
                str(s["images"]),
                str(s["queries"]),
                _pct(s["acc"]),
                _pct(s["pgd_acc"]),
                _pct(s["fgsm_acc"]),
                "**yes**" if s["beats_gradient"] else "no",
            ]
        )
        if s["beats_gradient"]:
            beaten.append(_name(r))
    verdict = (
        "The gradient-free attack beats both gradient attacks on: " + ", ".join(beaten) + "."
        if beaten
        else "The gradient-free attack beats the gradient attacks significantly on no model "
        f"(at {records[0]['square']['queries']} queries): it finds no masked gradients here."
    )
    return [
        "### Gradient-free attack (Square) against the gradient attacks",
        "",
        "Square (L-inf random search on the margin, outputs only) at each model's check",
        "epsilon (the grid point whose PGD accuracy is nearest half the clean accuracy: the",
        "grid's largest for a model that keeps more than half there), on",
        "the same images as PGD-20 and FGSM, against the model as tabled (its training",
        "solver). It beats the gradient attacks when it leaves fewer images correct than the",
        "better of them by enough to be significant under any pairing (exact two-sided sign",
        "test, 5 %).",
        "",
        markdown_table(
            [
                *WHO,
                "eps",
                "images",
                "queries",
                "Square",
                "PGD-20",
                "FGSM",
                "Square significantly lower",
            ],  # fmt: skip
            rows,
        ),
        "",
        verdict,
        "",
    ]


def _curve_table(records: list[dict[str, Any]]) -> list[str]:
    points = [(p["steps"], p["restarts"]) for r in records for p in r["curve"]["points"]]
    configs = sorted(set(points), key=lambda sr: (sr[1], sr[0]))
    rows, rises, significant = [], [], []
    for r in records:
        c = r["curve"]
        acc = {(p["steps"], p["restarts"]): p["acc"] for p in c["points"]}
        rise = round(c["images"] * largest_rise(c["points"]))
        rows.append(
            [
                *_who(r),
                f"{c['eps']:g}",
                f"{c['step_size']:.4g}",
                str(c["images"]),
                *(_pct(acc[k]) if k in acc else "–" for k in configs),
                _yes(c["never_rises"]),
                str(rise),
            ]
        )
        who = _name(r)
        if rise > 0:
            rises.append(f"{who} by {rise} of {c['images']} images")
        if resolvable(rise):
            significant.append(who)
    if not rises:
        verdict = f"No stronger configuration measures higher on any of the {len(records)} models."
    else:
        verdict = (
            f"A stronger configuration measures higher on {len(rises)} of {len(records)} "
            f"models: {'; '.join(rises)}. "
            + (
                "Rises large enough that they could be significant (exact two-sided sign test "
                "at its most favourable pairing, 5 %; per-image outcomes are not kept), a possible "
                "sign of masked gradients: " + ", ".join(significant) + "."
                if significant
                else "None of these rises could be significant under any pairing (exact sign "
                "test, 5 %): they are within what fresh random starts give."
            )
        )
    return [
        "### PGD against steps and restarts",
        "",
        "Accuracy under PGD at the check epsilon with the stated step size; each",
        "configuration draws fresh random starts and only each restart's final iterate",
        "counts, so a stronger attack may measure higher: `never rises` is computed, and",
        "fails when some configuration with at least the steps and restarts of another is",
        "more accurate.",
        "",
        markdown_table(
            [
                *WHO,
                "eps",
                "step",
                "images",
                *(f"{s} x {r}" for s, r in configs),
                "never rises",
                "largest rise (images)",
            ],  # fmt: skip
            rows,
        ),
        "",
        verdict,
        "",
    ]


def _grid_table(records: list[dict[str, Any]]) -> list[str]:
    grids = [r["grid"] for r in records]
    texts = {f"{g.get('pgd_steps', '?')} steps of {g.get('pgd_step_size', '?')}" for g in grids}
    pgd = "; ".join(sorted(texts))
    lines = [
        "### Accuracy on a fine epsilon grid",
        "",
        "FGSM is shown as measured (one linear step need not be monotone in epsilon); PGD",
        f"({pgd}, one random start) must fall: `PGD falls` is computed, as",
        "are `eps 0 = clean` (FGSM and PGD at radius 0 leave the clean accuracy) and whether",
        "PGD breaks at least 95 % of the images at a radius where every model should fall.",
        "",
    ]
    by_data: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_data[r["data"]].append(r)
    for data, recs in by_data.items():
        grid = recs[0]["grid"]["eps"]
        rows = []
        for r in recs:
            g = r["grid"]
            who = _who(r)[1:]
            eps0 = g.get("eps0_is_clean")
            large = r.get("large_eps", {})
            rows.append([*who, "FGSM", *map(_pct, g["fgsm"]), "", "–" if eps0 is None
                         else _yes(eps0), ""])  # fmt: skip
            rows.append(
                [
                    *who,
                    "PGD",
                    *map(_pct, g["pgd"]),
                    _yes(g["pgd_monotone"]),
                    "",
                    f"{_pct(large['pgd'])} at {large['eps']:g}: {_yes(large['near_zero'])}"
                    if large
                    else "–",
                ]  # fmt: skip
            )
        falls = [r for r in recs if not r["grid"]["pgd_monotone"]]
        eps0 = [r for r in recs if r["grid"].get("eps0_is_clean") is False]
        near = [r for r in recs if not r.get("large_eps", {}).get("near_zero", True)]
        summary = (
            f"Of {len(recs)} models, PGD falls with epsilon on {len(recs) - len(falls)}, "
            f"epsilon 0 leaves the clean accuracy on {len(recs) - len(eps0)} and PGD breaks at "
            f"least 95 % of the images at the large epsilon on {len(recs) - len(near)}."
            + "".join(
                f" {what}: " + ", ".join(f"{r['model']} ({r['recipe']}, seed {r['seed']})"
                                          for r in bad) + "."
                for what, bad in (("PGD rises on", falls), ("Epsilon 0 changes", eps0),
                                  ("PGD leaves more than 5 % at the large epsilon on", near))
                if bad
            )
        )  # fmt: skip
        lines += [
            f"{DATA_NAMES.get(data, data)}, {recs[0]['images']} images:",
            "",
            markdown_table(
                [
                    "recipe",
                    "model",
                    "seed",
                    "attack",
                    *(f"{e:g}" for e in grid),
                    "PGD falls",
                    "eps 0 = clean",
                    "PGD near zero at a large eps",
                ],  # fmt: skip
                rows,
            ),
            "",
            summary,
            "",
        ]
    return lines


def _differences(
    done: list[JobResult], groups: Groups, checks: dict[str, dict[str, Any]]
) -> list[str]:
    lines = ["## What differs from the study", ""]
    data_sets = sorted({d for d, _, _ in groups}, key=_data_order)
    tisode_recipes = {r for _, r, m in groups if m == "TisODE"}
    settings = sorted({_setting(run_config(j)) for j in done})
    here = (
        settings[0]
        if len(settings) == 1
        else "the settings listed at the top, per data set and model"
    )
    lines += [
        "- The study trains 100 epochs on full MNIST (60,000 images), Adam lr 1e-3, weight",
        "  decay 5e-4, Euler step 0.1 (TisODE 0.05, steady-state weight 0.01), models of",
        f"  about 140k parameters; here: {here}.",
        "- The study's PGD has no stated step count or restarts; ours is stated per run above.",
        "- The study reports MNIST, SVHN and ImgNet10; SVHN runs with",
        "  `make reproduce-robust budget=svhn` where its files are present"
        + (
            ""
            if "svhn" in data_sets
            else " (no SVHN run in this budget: its files come only from torchvision's"
            " download, which an offline machine lacks)"
        )
        + ", ImgNet10 is not reproduced.",
        (
            "- The study's third table (TisODE) is printed with shifted-looking column labels;"
            "\n  its values are shown beside ours, and only its ordering (TisODE at or above "
            "ODENet\n  and the CNN in every column) is compared"
            + (
                ""
                if "pgd" in tisode_recipes
                else "; its heading names adversarial training, but our TisODE runs are "
                f"trained with the {' and '.join(sorted(tisode_recipes, key=_recipe_order))} "
                "recipe" + ("s" if len(tisode_recipes) > 1 else "") + " only"
            )
            + "."
            if tisode_recipes
            else "- The study's third table (headed adversarial training, with TisODE) has no "
            "TisODE run beside it here"
            + (
                "; only its ordering of ODENet over the CNN is compared, for adversarial "
                "training, where the study prints no numbers."
                if "pgd" in {r for _, r, _ in groups}
                else "; it is not compared."
            )
        ),
    ]
    sigmas = {d: _training_sigma(groups, d, "gaussian").removeprefix(", ") for d in data_sets}
    if any(sigmas.values()):
        lines.append(
            "- Gaussian-noise training: "
            + "; ".join(f"{DATA_NAMES.get(d, d)} at {v}" for d, v in sigmas.items() if v)
            + " (the study trains MNIST at sigma 100 and does not state its SVHN sigma)."
        )
    unequal = _unequal_epochs(groups)
    if unequal:
        lines.append(
            "- The study trains every model for the same 100 epochs; here models of one "
            "recipe may train for different numbers of epochs (listed under the floor table)."
        )
    records = [r for r in checks.values() if r.get("complete")]
    if not records:
        lines.append(
            "- No finished masking checks in this budget"
            + (" (the finished stages of unfinished ones are shown above)." if checks else ".")
        )
    else:
        seeds = sorted({str(r["seed"]) for r in records})
        checked = {(r["data"], r["recipe"], r["model"]) for r in records}
        groups = checked | {(_data(j), _recipe(j), _model(j)) for j in done}
        models, groups = len(checked), len(groups)
        sizes = sorted(
            {
                (r["images"], r["curve"]["images"], r["square"]["images"], r["square"]["queries"])
                for r in records
            }  # fmt: skip
        )
        lines.append(
            f"- Masking checks (not in the study) on seed{'s' if len(seeds) > 1 else ''} "
            f"{', '.join(seeds)} of "
            + (f"each of the {groups}" if models == groups else f"{models} of the {groups}")
            + " models (one per data set, recipe and architecture)"
            + (
                "; the tables' other seeds are not checked"
                if {str(j.overrides.get("seed", "?")) for j in done} - set(seeds)
                else ""
            )
            + ": "
            + "; ".join(
                f"{a} images for the epsilon grid, {b} for the steps and restarts curve, {c} "
                f"for Square at {q} queries, the solver checks and the comparison with ART"
                for a, b, c, q in sizes
            )
            + " (fewer than the tables' attacked images: the checks cost tens of gradient "
            "attacks per model)."
        )
    unstudied = sorted({_data(j) for j in done} - set(STUDY))
    if unstudied:
        names = " or ".join(DATA_NAMES.get(d, d) for d in unstudied)
        lines.append(
            f"- The study has no {names} results: those tables compare our models with "
            "each other only."
        )
    return [*lines, ""]


def _accuracy_figure(
    groups: Groups,
    data: str,
    recipe: str,
    columns: list[str],
    paper: dict[str, dict[str, float]],
    path: Path,
) -> bool:
    """Accuracy against attack strength, one panel per attack kind, ours and the study's."""
    from odelab.plotting import plt

    models = [m for m in MODELS.values() if groups.get((data, recipe, m))]
    kinds = [k for k in KINDS if any(c.startswith(f"{k}_") for c in columns)]
    if not models or not kinds:
        return False
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.7 * len(kinds), 3.4), sharey=True)
    axes = [axes] if len(kinds) == 1 else list(axes)
    for ax, kind in zip(axes, kinds, strict=True):
        names = [c for c in columns if c.startswith(f"{kind}_")]
        strengths = [float(c.split("_")[1]) for c in names]
        for i, model in enumerate(models):
            stats = [mean_std(_acc(groups[data, recipe, model], f"test/acc/{c}")) for c in names]
            ax.errorbar(
                strengths,
                [s[0] for s in stats],
                yerr=[s[1] for s in stats],
                marker="o",
                color=f"C{i}",
                capsize=3,
                label=f"{model} (ours)",
            )
            points = [(s, paper[model][c]) for s, c in zip(strengths, names, strict=True)
                      if c in paper.get(model, {})]  # fmt: skip
            if points:
                ax.plot(*zip(*points, strict=True), linestyle="--", marker="x", color=f"C{i}",
                        label=f"{model} (study)")  # fmt: skip
        ax.set_title(KIND_NAMES[kind])
        ax.set_xlabel("sigma (0-255)" if kind == "gaussian" else "epsilon")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=False):
            legend.setdefault(label, handle)
    axes[-1].legend(legend.values(), legend.keys(), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _run_label(job: JobResult) -> str:
    return (
        f"{_model(job)}, {DATA_NAMES.get(_data(job), _data(job))}, {_recipe(job)}, "
        f"seed {job.overrides.get('seed', '0')}"
    )


def _attacked(cfg) -> str:
    n = _test_images(cfg)
    return str(n) if n else "all"


def _setting(cfg) -> str:
    if cfg is None:
        return "n/a (run config not found)"
    data = cfg.data
    train = (
        f"{data.train_subset} training images"
        if data.get("train_subset")
        else "all of its training images"
    )
    dataset = str(data.get("dataset"))
    name = DATA_NAMES.get(dataset, dataset)
    if data.get("offline_test_split"):
        split = f"{data.val_size} val / {data.test_size} test"
        if dataset in TEST_SET_SIZE:
            split = f"{TEST_SET_SIZE[dataset] - data.val_size - data.test_size} train / {split}"
        source = f"offline {name} test-set split ({split})"
    else:
        source = f"{name} train/test files"
    pgd = next((s for s in cfg.attack.get("sweeps", []) if s.get("kind") == "pgd"), None)
    pgd_text = ""
    if pgd:
        judged = {"final": "final iterate judged", "best_loss": "best-loss iterate judged"}.get(
            pgd.get("select"), "any iterate judged (made before final-iterate PGD)"
        )
        pgd_text = f", PGD {pgd.steps} steps x {pgd.restarts} restart(s), {judged}"
    scheduler = cfg.model.get("scheduler")
    schedule = (
        f" (x{scheduler.gamma} at epochs {list(scheduler.milestones)})"
        if scheduler and "milestones" in scheduler
        else ""
    )
    decay = cfg.model.optimizer.get("weight_decay")
    return (
        f"{source}, {train}, {_recipe_text(cfg)}, {cfg.trainer.max_epochs} epochs, "
        f"batch {cfg.data.batch_size}, "
        f"Adam lr {cfg.model.optimizer.lr}{schedule}"
        + (f", weight decay {decay:g}" if decay else "")
        + f", {cfg.model.net.channels} channels, {_attacked(cfg)} attacked test images{pgd_text}"
    )


def _recipe_text(cfg) -> str:
    """The training recipe of a run config in words."""
    recipe = cfg.get("recipe")
    perturbation = recipe.get("perturbation") if recipe else None
    if not perturbation:
        return "clean training"
    kind = str(perturbation.get("_target_", "")).rsplit(".", 1)[-1]
    if kind == "GaussianNoise":
        what = f"its copy with Gaussian noise (sigma {perturbation.sigma:g})"
    elif kind == "PGD":
        steps = perturbation.get("steps", 20)
        step = perturbation.get("step_size") or 2.5 * perturbation.eps / steps
        what = f"its PGD examples (eps {perturbation.eps:g}, {steps} steps of {step:g})"
    elif kind == "FGSM":
        what = f"its FGSM examples (eps {perturbation.eps:g})"
    else:
        what = kind
    share = "half" if recipe.fraction == 0.5 else f"{100 * recipe.fraction:g} %"
    warmup = recipe.get("warmup_epochs") or 0
    ramp = f", its strength ramped up from zero over {warmup:g} epochs" if warmup else ""
    return f"{share} of every training batch replaced by {what}{ramp}"


def _solve(jobs: Sequence[JobResult]) -> str:
    """How a group's model integrates (method, step, horizon), from its run config."""
    cfg = run_config(jobs[0]) if jobs else None
    if cfg is None or "t_end" not in cfg.model.net:
        return "–"
    step = cfg.solver.get("step_size")
    weight = cfg.model.get("regularization_weight")
    return (
        f"{cfg.solver.method}{f' {step:g}' if step else ''} over [0, {cfg.model.net.t_end:g}]"
        + (f", steady-state weight {weight:g}" if weight else "")
    )


ROBUST = Reproduction(
    name="robust",
    title="CNN vs ODENet vs TisODE under noise, FGSM and PGD (Yan et al. 2020)",
    budgets=BUDGETS,
    benchmarks=BENCHMARKS,
    build=build_report,
)
