"""Report for the robustness study (Yan et al. 2020): CNN vs ODENet vs TisODE under attack.

Every run tests its model under the study's attacks (Gaussian noise, FGSM, PGD): the tables are
the runs' final metrics in sections by the tags of the budget's sweeps, the claims (yan2020.yaml)
judged paired per seed. A combined budget (`cpu`) reads its parts' records in place."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import odelab.reports.base as base
import odelab.reports.claims as cl
from odelab.reports.frame import runs_frame
from odelab.reports.render import render
from odelab.reports.robust_figure import differences_figure, validation_figure
from odelab.reports.robust_record import DATA, MASKING_LABELS, MODELS, check_rows, check_verdicts

RECIPES = {"clean": "clean", "gaussian": "Gaussian-noise", "pgd": "PGD-adversarial"}
# Our clean-accuracy floors (%): robust accuracy compares only models over them on every seed.
FLOORS = {"mnist": 98.0, "fashion": 88.0}
AT_FLOOR = 1.0  # both models under this (%): the column says nothing about their order
# Each section's contrasts, with the claim each instantiates (the authors' 2 x 2: every ODENet
# against every CNN, so that the table shows which net flips the ordering).
PAIRS = {
    ("robust_odenet", "robust_cnn"): "odenet_over_cnn",
    ("tisode", "robust_odenet"): "tisode_over_odenet",
    ("robust_odenet_authors", "robust_cnn_authors"): "odenet_over_cnn",
    ("robust_odenet_authors", "robust_cnn"): "odenet_over_cnn",
    ("robust_odenet", "robust_cnn_authors"): "odenet_over_cnn",
}
KINDS = ("gaussian", "fgsm", "pgd")
TEST_SET_SIZE = {"mnist": 10_000, "fashion_mnist": 10_000, "svhn": 26_032}
ACC, CLEAN, UNTESTED = "metric.test/acc/", "metric.test/acc", "not testable here"
# Columns every row has, NaN where a run lacks them (a fabricated run without a config).
NEEDED = (
    "epochs",
    "train_images",
    "lr",
    "schedule",
    "channels",
    "metric.model/params",
    "metric.val/acc",
    CLEAN,
)
BUDGETS, TAGS = base.conf_budgets("robust")[0], base.conf_tags("robust")


def label(name: str) -> str:
    """`gaussian_50` -> `s=50`, `fgsm_0.15` -> `FGSM .15`, `fgsm_0.0117647` -> `FGSM 3/255`."""
    kind, strength = name.split("_", 1)
    if kind == "gaussian":
        return f"s={strength}"
    pixels = float(strength) * 255
    if len(strength) > 6 and abs(pixels - round(pixels)) < 1e-4:
        return f"{kind.upper()} {round(pixels)}/255"
    return f"{kind.upper()} {strength[1:] if strength.startswith('0.') else strength}"


def section_title(tag: str) -> str:
    data, recipe = tag.split("_", 1)
    return f"{DATA.get(data, data)}, {RECIPES.get(recipe, recipe)} training"


def claim_label(claim: cl.Claim) -> str:
    """`ODENet vs CNN, MNIST, clean training, s=50` (`mean`: the mean attacked accuracy)."""
    a, b = (MODELS[m] for m in claim.arms)
    what = label(claim.metric[len("test/acc/") :]) if claim.metric.startswith("test/") else "mean"
    return f"{a} vs {b}, {section_title(str(claim.section))}, {what}"


def attack_columns(frame: pd.DataFrame) -> list[str]:
    """The attack names the runs logged, by kind (noise, FGSM, PGD), then strength."""
    names = [c[len(ACC) :] for c in frame.columns if c.startswith(ACC)]
    names = [n for n in names if n.split("_")[0] in KINDS and frame[ACC + n].notna().any()]
    return sorted(names, key=lambda n: (KINDS.index(n.split("_")[0]), float(n.split("_")[1])))


def _settings(job: base.JobResult) -> dict[str, Any]:
    """Epochs, training images, learning rate, schedule and width from a run's config."""
    if (cfg := job.run.config) is None:
        return {}
    data, scheduler = cfg.data, cfg.model.get("scheduler")
    images = data.get("train_subset")
    if not images and data.get("offline_test_split"):
        images = TEST_SET_SIZE.get(str(data.dataset), 0) - data.val_size - data.test_size
    return {
        "epochs": int(cfg.trainer.max_epochs),
        "train_images": images or None,
        "lr": float(cfg.model.optimizer.lr),
        "channels": int(cfg.model.net.channels),
        "schedule": (
            f"x{scheduler.gamma:g} at " + "/".join(str(m) for m in scheduler.milestones)
            if scheduler and "milestones" in scheduler
            else ""
        ),
    }


def robust_frame(jobs: base.Jobs, budget: str, reports: Path) -> pd.DataFrame:
    """The runs with their section `tag` (of the budget's sweep, also one read from a part
    budget's records), sweep `folder`, settings and accuracies in %."""
    tags = TAGS.get(budget, [])
    parts = {base.part_record(ROBUST, budget, i, reports).resolve(): t for i, t in enumerate(tags)}
    frame = runs_frame(jobs, tags=tags)
    if frame.empty:
        return frame.assign(tag=pd.Series(dtype=str), experiment=pd.Series(dtype=str))
    if "model" in frame:  # the authors' 2 x 2 selects its arm by `model=`, not `experiment=`
        frame["experiment"] = frame["model"].fillna(frame["experiment"])
    sweeps = [job.output_dir.parent for job in jobs]
    frame["tag"] = [parts.get(s.resolve(), t) for s, t in zip(sweeps, frame["tag"], strict=True)]
    frame["folder"] = [base.relative_path(s) for s in sweeps]
    frame = frame.join(pd.DataFrame([_settings(job) for job in jobs], index=frame.index))
    frame = frame.assign(**{c: float("nan") for c in NEEDED if c not in frame})
    percent = [c for c in frame if c.startswith(ACC) or c in (CLEAN, "metric.val/acc")]
    frame[percent] *= 100
    return frame


def _gate(rows: pd.DataFrame, claim: cl.Claim, column: str | None) -> str | None:
    """Why the claim's models cannot be compared on these runs (one under its clean floor on some
    seed, or without runs; both at the floor of the attacked column), or None."""
    floor = FLOORS.get(str(claim.section).split("_", 1)[0], float("-inf"))
    models = rows[rows["ok"]].groupby("experiment")
    lowest = models[CLEAN].min()
    if under := [MODELS[m] for m in claim.arms if lowest.get(m, floor) < floor]:
        return f"{' and '.join(under)} under the {floor:g} % clean floor on some seed"
    if absent := [MODELS[m] for m in claim.arms if m not in lowest.index]:
        return f"no {' or '.join(absent)} runs"
    if column and (models[ACC + column].mean().reindex(claim.arms) < AT_FLOOR).all():
        return "both models at the floor, under 1 %"
    return None


def _paired(rows: pd.DataFrame, arms: tuple[str, ...], columns: list[str]) -> list[list]:
    """Per-seed values of both arms (the mean over `columns`) on the seeds both have."""
    done = rows[rows["ok"]].set_index("seed")
    a, b = (done[done["experiment"] == m][[ACC + c for c in columns]].mean(axis=1) for m in arms)
    a, b = a.align(b, join="inner")
    order = sorted(a.index, key=lambda s: (len(str(s)), str(s)))
    return [a.loc[order].tolist(), b.loc[order].tolist()]


def judge(claim: cl.Claim, rows: pd.DataFrame) -> cl.Verdict:
    """A contrast judged on its section's runs: on its column, or the mean of those not gated."""
    arms = claim.arms
    if claim.metric.startswith("test/acc/"):
        columns = [claim.metric[len("test/acc/") :]]
        logged = ACC + columns[0] in rows
        why = _gate(rows, claim, columns[0]) if logged else f"no run logged {claim.metric}"
    else:
        columns = [c for c in attack_columns(rows) if _gate(rows, claim, c) is None]
        why = _gate(rows, claim, None) or (None if columns else "every column at the floor")
    return cl.not_testable(claim, why) if why else cl.evaluate(claim, *_paired(rows, arms, columns))


def section(rows: pd.DataFrame, tag: str, claims: dict[str, cl.Claim]) -> dict[str, Any]:
    """One section: accuracy per model and column (mean, std over seeds; the study's) and per column
    and their mean the paired contrasts (`vs`; `raw` ungated, for the figure), the study's too."""
    columns, done = attack_columns(rows), rows[rows["ok"]]
    paper: dict[str, dict[str, float]] = {}  # the study's first/second table of this section
    for c in claims.values():
        if c.id.startswith(f"{tag}_") and isinstance(c.paper_value, list):
            for arm, value in zip(c.arms, c.paper_value, strict=True):
                paper.setdefault(arm, {})[c.metric[len("test/acc/") :]] = value
    grouped = done.groupby("experiment")[[CLEAN, *(ACC + c for c in columns)]]
    mean, std, n = grouped.mean(), grouped.std(), done["experiment"].value_counts()
    models = [
        {
            "name": MODELS[m],
            "n": n[m],
            "cells": zip(mean.loc[m], std.loc[m], strict=True),
            "paper": [paper[m].get(c) for c in columns] if m in paper else None,
        }
        for m in MODELS
        if m in mean.index
    ]
    pairs = [arms for arms in PAIRS if set(arms) <= set(mean.index)]
    table, labels = [], {}
    for c in [None, *columns]:
        row: dict[str, Any] = {"label": label(c) if c else "mean", "vs": [], "raw": []}
        for arms in pairs:  # an id of no YAML claim: not in claims.json
            name, claim = f"{tag}/{'/'.join(arms)}/{c or 'mean'}", claims[PAIRS[arms]]
            metric = f"test/acc/{c}" if c else claim.metric
            claim = replace(claim, id=name, section=tag, metric=metric, arms=arms)
            row["vs"].append(judge(claim, rows))
            row["raw"].append(cl.evaluate(claim, *_paired(rows, arms, [c])) if c else None)
            labels[name] = claim_label(claim)
        study = [paper.get(m, {}).get(c) for m in pairs[0]] if c and pairs else [None]
        table.append(row | {"paper": None if None in study else study[0] - study[1]})
    return {
        "tag": tag,
        "title": section_title(tag),
        "columns": [label(c) for c in columns],
        "models": models,
        "pairs": [(MODELS[a], MODELS[b]) for a, b in pairs],
        "table": table,
        "gated": [
            (f"{MODELS[a]} - {MODELS[b]}", v.reason)
            for (a, b), v in zip(pairs, table[0]["vs"], strict=True)
            if v.verdict == UNTESTED
        ],
        "labels": labels,
    }


def settings(done: pd.DataFrame) -> dict[str, Any]:
    """Our settings beside the paper's: images, epochs and size per model, optimizer, device."""
    images = done.groupby(done["tag"].str.split("_").str[0].replace(DATA), sort=False)
    models = done.groupby("experiment").agg(
        low=("epochs", "min"), high=("epochs", "max"), params=("metric.model/params", "first")
    )
    models = models.reindex([m for m in MODELS if m in models.index]).rename(MODELS)
    return {
        "paper": yaml.safe_load((cl.CLAIMS_DIR / "yan2020.yaml").read_text())["setting"],
        "images": list(images["train_images"].max().items()),
        "schedules": sorted(
            (s for s in done["schedule"].dropna().unique() if s),
            key=lambda s: [int(m) for m in s.split(" at ")[1].split("/")],
        ),
        "models": models.reset_index().to_dict("records"),
        **{c: sorted(done[c].unique()) for c in ("lr", "device", "channels")},
    }


def floor_rows(done: pd.DataFrame) -> list[dict[str, Any]]:
    """Clean accuracy against our floor, per section and model."""
    table = (
        done.groupby(["tag", "experiment"], sort=False)
        .agg(
            params=("metric.model/params", "first"),
            epochs=("epochs", "max"),
            wall=("wall_s", "mean"),
            val_low=("metric.val/acc", "min"),
            test=(CLEAN, "mean"),
            test_std=(CLEAN, "std"),
            test_low=(CLEAN, "min"),
            n=("seed", "count"),
        )
        .reset_index()
    )
    floors = pd.Series([FLOORS.get(t.split("_", 1)[0]) for t in table["tag"]], dtype=object)
    table = table.assign(section=table["tag"].map(section_title), floor=floors)
    return table.assign(model=table["experiment"].replace(MODELS)).to_dict("records")


def build_report(jobs: base.Jobs, budget: str, report_dir: Path) -> str:
    """The markdown (and `claims.json`, the summary figure) from the records alone."""
    # The reports folder the records were read from, not always the one rendered into (tests).
    sweep = jobs[0].output_dir.parent if jobs else report_dir
    reports = sweep.parents[2] if sweep.parent.name == "records" else report_dir.parent
    frame = robust_frame(jobs, budget, reports)
    done, claims, tags = frame[frame["ok"]], cl.load_claims("yan2020"), TAGS.get(budget, [])
    sections = [section(frame[frame["tag"] == t], t, claims) for t in dict.fromkeys(tags)]
    verdicts = [
        judge(c, frame[frame["tag"] == c.section])
        if (frame["tag"] == c.section).any()
        else cl.not_testable(c, c.reason or f"budget {budget} runs no {c.section} sweep")
        for c in claims.values()
    ]
    checks = check_rows(jobs, budget, reports, report_dir)
    masking = check_verdicts(checks)
    cl.write_claims(report_dir / "claims.json", verdicts + masking)
    tested = [v for v in verdicts if v.verdict != UNTESTED]
    third = [v for v in tested if "third table" in claims[v.claim].source]
    # Without the study's numbers in this budget's setting: the sections' means instead.
    means = [v for s in sections for v in s["table"][0]["vs"]]
    headline = [v for v in tested if v not in third] or means
    labels = {c.id: claim_label(c) for c in claims.values()} | MASKING_LABELS
    labels |= {k: text for s in sections for k, text in s["labels"].items()}
    for v in headline:  # a row that could not be judged says why
        labels[v.claim] += f" ({v.reason})" if v.verdict == UNTESTED else ""
    untested = [(v.reason, v.claim) for v in verdicts if v.verdict == UNTESTED]
    untested = pd.DataFrame(untested, columns=["r", "c"]).groupby("r", sort=False)["c"].agg(list)
    figure = differences_figure(sections, report_dir / "differences.png")
    curves: dict[str, list] = {}  # noisy-validation selection: its curves beside the clean ones
    for r in done.itertuples():
        epochs, noisy = jobs[r.Index].run.epoch_series("val/acc_noisy")
        clean = dict(zip(*jobs[r.Index].run.epoch_series("val/acc"), strict=True))
        if noisy and r.experiment in MODELS:
            run = (epochs, [clean.get(e) for e in epochs], noisy)
            curves.setdefault(MODELS[r.experiment], []).append(run)
    validation = validation_figure(curves, report_dir / "validation.png")
    runs = frame.groupby(["folder", "tag"], sort=False)["ok"].agg(finished="sum", jobs="count")
    return render(
        "robust.md.j2",
        budget=budget,
        headline=headline,
        labels=labels,
        sections=sections,
        figure=f"{report_dir.name}/{figure.name}" if figure else None,
        validation=f"{report_dir.name}/{validation.name}" if validation else None,
        third=third,
        ours=None if frame.empty else settings(done),
        checks=checks,
        masking=masking,
        floors=[] if frame.empty else floor_rows(done),
        runs=runs.reset_index().to_dict("records"),
        untested=list(untested.items()),
        failed=frame[~frame["ok"]].to_dict("records"),
    )


TITLE = "CNN vs ODENet vs TisODE under noise, FGSM and PGD (Yan et al. 2020)"
ROBUST = base.Reproduction.from_conf("robust", TITLE, build_report)
