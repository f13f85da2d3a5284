"""Report for the robustness study (Yan et al. 2020): CNN vs ODENet vs TisODE under attack.

Every run tests its model under the study's attack table (`attack=study` / `study_fashion`:
Gaussian noise, FGSM, PGD) in its test loop, so the tables are the runs' final metrics, read
into one pandas frame (`frame.runs_frame`). The report's sections are the section tags of the
budget's sweeps (`tags` in conf/reproduce/robust.yaml: `<data>_<recipe>`); the paper's numbers
and claims are `conf/claims/yan2020.yaml`, judged by `claims.evaluate` paired per training seed
and written to `claims.json` beside the report. The masking checks
(`experiments/robust_checks.py`, one typed record per checked model, `robust_record`) judge
two claims of `conf/claims/checks.yaml`. A combined budget (`cpu`) reads its parts' records in
place (`base.part_record`). Python computes; `templates/robust.md.j2` presents.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from odelab.reports.base import (
    Jobs,
    Reproduction,
    conf_budgets,
    conf_tags,
    part_record,
    relative_path,
)
from odelab.reports.claims import (
    CLAIMS_DIR,
    Claim,
    Verdict,
    evaluate,
    load_claims,
    not_testable,
    write_claims,
)
from odelab.reports.frame import runs_frame
from odelab.reports.render import render
from odelab.reports.robust_figure import differences_figure
from odelab.reports.robust_masking import (
    DATA,
    MASKING_LABELS,
    check_records,
    check_rows,
    check_verdicts,
)

MODELS = {"robust_cnn": "CNN", "robust_odenet": "ODENet", "tisode": "TisODE"}
RECIPES = {"clean": "clean", "gaussian": "Gaussian-noise", "pgd": "PGD-adversarial"}
# Our clean-accuracy floors (%): robust accuracy compares only models over them on every seed.
FLOORS = {"mnist": 98.0, "fashion": 88.0}
AT_FLOOR = 1.0  # both models under this (%): the column says nothing about their order
PAIRS = (("robust_odenet", "robust_cnn"), ("tisode", "robust_odenet"))
KINDS = ("gaussian", "fgsm", "pgd")
TEST_SET_SIZE = {"mnist": 10_000, "fashion_mnist": 10_000, "svhn": 26_032}
ACC = "metric.test/acc/"
# Columns every row has, NaN where a run lacks them (a fabricated run without a config).
NEEDED = ("epochs", "train_images", "lr", "stepped", "channels", "metric.model/params",
          "metric.val/acc", "metric.test/acc")  # fmt: skip
BUDGETS = conf_budgets("robust")[0]
TAGS = conf_tags("robust")


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


def attack_columns(frame: pd.DataFrame) -> list[str]:
    """The attack names the runs logged, by kind (noise, FGSM, PGD), then strength."""
    names = [c[len(ACC) :] for c in frame.columns if c.startswith(ACC)]
    names = [n for n in names if n.split("_")[0] in KINDS and frame[ACC + n].notna().any()]
    return sorted(names, key=lambda n: (KINDS.index(n.split("_")[0]), float(n.split("_")[1])))


def _config_columns(job: Any) -> dict[str, Any]:
    """Settings of a run read from its config (epochs, training images, optimizer)."""
    cfg = job.run.config
    if cfg is None:
        return {}
    data = cfg.data
    images = data.get("train_subset")
    if not images and data.get("offline_test_split"):
        images = TEST_SET_SIZE.get(str(data.dataset), 0) - data.val_size - data.test_size
    scheduler = cfg.model.get("scheduler")
    return {
        "epochs": int(cfg.trainer.max_epochs),
        "train_images": images or None,
        "lr": float(cfg.model.optimizer.lr),
        "stepped": bool(scheduler and "milestones" in scheduler),
        "channels": int(cfg.model.net.channels),
    }


def reports_dir(jobs: Jobs, report_dir: Path) -> Path:
    """The reports folder the records were read from (`<reports>/<report>/records/<i>/<job>`),
    which need not be the one the report is rendered into (a test renders elsewhere)."""
    sweep = jobs[0].output_dir.parent if jobs else None
    return sweep.parents[2] if sweep and sweep.parent.name == "records" else report_dir.parent


def robust_frame(jobs: Jobs, budget: str, report_dir: Path) -> pd.DataFrame:
    """The runs as a frame with their section `tag` (the tag of the budget's sweep they belong
    to, also when that sweep is read from a part budget's records) and accuracies in %."""
    tags = TAGS.get(budget, [])
    reports = reports_dir(jobs, report_dir)
    folders = {part_record(ROBUST, budget, i, reports).resolve(): t for i, t in enumerate(tags)}
    frame = runs_frame(jobs)
    if frame.empty:
        return frame.assign(tag=pd.Series(dtype=str), experiment=pd.Series(dtype=str))

    def tag_of(job: Any) -> str:
        sweep = job.output_dir.parent
        if sweep.resolve() in folders:
            return folders[sweep.resolve()]
        return tags[int(sweep.name)] if sweep.name.isdigit() and int(sweep.name) < len(tags) else ""

    frame["tag"] = [tag_of(job) for job in jobs]
    frame["folder"] = [relative_path(job.output_dir.parent) for job in jobs]
    extra = pd.DataFrame([_config_columns(job) for job in jobs], index=frame.index)
    frame = frame.join(extra)
    frame = frame.assign(**{c: float("nan") for c in NEEDED if c not in frame})
    percent = [
        c for c in frame.columns if c.startswith(ACC) or c in ("metric.test/acc", "metric.val/acc")
    ]
    frame[percent] = frame[percent] * 100
    return frame


def _gate(rows: pd.DataFrame, tag: str, arms: tuple[str, str], column: str | None) -> str | None:
    """Why the pair cannot be compared in this section, or None: a model under the clean floor
    on some seed, or both at the floor of the attacked column."""
    floor = FLOORS.get(tag.split("_", 1)[0])
    done = rows[rows["ok"]]
    lowest = done.groupby("experiment")["metric.test/acc"].min()
    under = [MODELS[m] for m in arms if floor is not None and lowest.get(m, floor) < floor]
    if under:
        return f"{' and '.join(under)} under the {floor:g} % clean floor on some seed"
    if any(m not in set(done["experiment"]) for m in arms):
        return f"no {' or '.join(MODELS[m] for m in arms if m not in set(done['experiment']))} runs"
    if column and (done.groupby("experiment")[ACC + column].mean().reindex(arms) < AT_FLOOR).all():
        return "both models at the floor, under 1 %"
    return None


def _paired(rows: pd.DataFrame, arms: tuple[str, str], columns: list[str]) -> tuple[list, list]:
    """Per-seed values of both arms on the seeds both have; the mean over `columns`."""
    values = []
    for arm in arms:
        mine = rows[rows["ok"] & (rows["experiment"] == arm)].set_index("seed")
        values.append(mine[[ACC + c for c in columns]].mean(axis=1))
    a, b = values[0].align(values[1], join="inner")
    order = sorted(a.index, key=lambda s: (len(str(s)), str(s)))
    return a.loc[order].tolist(), b.loc[order].tolist()


def judge(claim: Claim, rows: pd.DataFrame, tag: str) -> Verdict:
    """The verdict of a contrast claim on the runs of one section (`rows`)."""
    arms = (claim.arms[0], claim.arms[1])
    if claim.metric.startswith("test/acc/"):
        columns = [claim.metric[len("test/acc/") :]]
        if ACC + columns[0] not in rows:
            return not_testable(claim, f"no run logged {claim.metric}")
        why = _gate(rows, tag, arms, columns[0])
    else:  # the mean over the columns where at least one model is off the floor
        why = _gate(rows, tag, arms, None)
        columns = [c for c in attack_columns(rows) if _gate(rows, tag, arms, c) is None]
        why = why or (None if columns else "every column at the floor")
    if why:
        return not_testable(claim, why)
    a, b = _paired(rows, arms, columns)
    return evaluate(claim, a, b)


def _paper_rows(claims: dict[str, Claim], tag: str) -> dict[str, dict[str, float]]:
    """The study's accuracy per model and column of a section (its first/second table)."""
    out: dict[str, dict[str, float]] = {}
    for claim in claims.values():
        if claim.id.startswith(f"{tag}_") and isinstance(claim.paper_value, list):
            for arm, value in zip(claim.arms, claim.paper_value, strict=True):
                out.setdefault(arm, {})[claim.metric[len("test/acc/") :]] = value
    return out


def section(rows: pd.DataFrame, tag: str, claims: dict[str, Claim]) -> dict[str, Any]:
    """One section's context: accuracy per model (ours and the study's), the paired contrasts
    per column, and the means over the columns."""
    columns = attack_columns(rows)
    done = rows[rows["ok"]]
    models = [m for m in MODELS if m in set(done["experiment"])]
    paper = _paper_rows(claims, tag)
    cells = ["metric.test/acc", *(ACC + c for c in columns)]
    stats = done.groupby("experiment")[cells].agg(["mean", "std"])
    accuracy = []
    for model in models:
        if model in paper:
            study = [None] + [(paper[model].get(c), None) for c in columns]
            accuracy.append({"name": f"{MODELS[model]} (study)", "cells": study})
        n = int((done["experiment"] == model).sum())
        ours = [(stats.loc[model, (c, "mean")], stats.loc[model, (c, "std")]) for c in cells]
        accuracy.append({"name": f"**{MODELS[model]} (ours, n={n})**", "cells": ours})
    contrasts = []
    for arms in PAIRS:
        if not all(m in models for m in arms):
            continue
        base = claims["odenet_over_cnn" if arms == PAIRS[0] else "tisode_over_odenet"]
        rows_out = []
        for c in [None, *columns]:
            metric = f"test/acc/{c}" if c else "mean attacked accuracy"
            pv = [paper[a].get(c) for a in arms] if c and all(a in paper for a in arms) else None
            name = f"{tag}/{arms[0]}/{arms[1]}/{c or 'mean'}"  # not a YAML id: not in claims.json
            claim = replace(base, id=name, metric=metric, section=tag, paper_value=pv)
            v = judge(claim, rows, tag)
            diff_paper = pv[0] - pv[1] if pv and None not in pv else None
            # The figure shows a column a gate keeps from a verdict too (hollow): the data.
            raw = v if v.diff is not None or not c else evaluate(claim, *_paired(rows, arms, [c]))
            row = {"label": label(c) if c else "mean", "v": v, "raw": raw, "paper": diff_paper}
            rows_out.append(row)
        contrasts.append({"a": MODELS[arms[0]], "b": MODELS[arms[1]], "rows": rows_out})
    table = [
        {"label": r["label"], "paper": r["paper"], "vs": [c["rows"][i]["v"] for c in contrasts]}
        for i, r in enumerate(contrasts[0]["rows"] if contrasts else [])
    ]
    return {"tag": tag, "title": section_title(tag), "columns": [label(c) for c in columns],
            "accuracy": accuracy, "contrasts": contrasts, "table": table}  # fmt: skip


def floor_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Clean accuracy against our floor, per section and model."""
    done = frame[frame["ok"]]
    grouped = done.groupby(["tag", "experiment"], sort=False)
    table = grouped.agg(
        params=("metric.model/params", "first"),
        epochs=("epochs", "max"),
        wall=("wall_s", "mean"),
        val_low=("metric.val/acc", "min"),
        test=("metric.test/acc", "mean"),
        test_std=("metric.test/acc", "std"),
        test_low=("metric.test/acc", "min"),
        n=("seed", "count"),
    ).reset_index()
    out = []
    for row in table.itertuples():
        floor = FLOORS.get(row.tag.split("_", 1)[0])
        out.append({
            "section": section_title(row.tag), "model": MODELS.get(row.experiment, row.experiment),
            "params": f"{row.params:,.0f}", "epochs": row.epochs, "minutes": row.wall / 60,
            "val_low": row.val_low, "test": row.test, "test_std": row.test_std,
            "test_low": row.test_low, "n": row.n, "floor": floor,
            "met": "—" if floor is None else "yes" if row.test_low >= floor else "**no**",
        })  # fmt: skip
    return out


def differs(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Settings that differ from the paper's (the paper's side from yan2020.yaml)."""
    paper = yaml.safe_load((CLAIMS_DIR / "yan2020.yaml").read_text())["setting"]
    done = frame[frame["ok"]]
    data = done.assign(data=done["tag"].str.split("_").str[0]).groupby("data", sort=False)
    images = ", ".join(f"{DATA.get(d, d)} {g['train_images'].max():,.0f}" for d, g in data)
    epochs = done.groupby("experiment")["epochs"].agg(["min", "max"])
    spans = ", ".join(
        f"{MODELS[m]} {e['min']}" + (f"–{e['max']}" if e["max"] != e["min"] else "")
        for m, e in epochs.reindex([m for m in MODELS if m in epochs.index]).iterrows()
    )
    lrs = "/".join(f"{v:g}" for v in sorted(done["lr"].unique()))
    stepped = ", x0.1 at two milestones" if done["stepped"].any() else ""
    device = "; ".join(sorted(done["device"].unique()))
    params = done.groupby("experiment")["metric.model/params"].first()
    arch = ", ".join(f"{MODELS[m]} {params[m]:,.0f}" for m in MODELS if m in params.index)
    channels = "/".join(str(c) for c in sorted(done["channels"].unique()))
    return [
        ("Training data, epochs", paper["data"], f"{images} training images; epochs {spans}"),
        ("Optimizer, device", paper["optimizer"], f"Adam {lrs}{stepped}; {device}"),
        ("Architectures", paper["architectures"], f"{channels} channels; parameters {arch}"),
    ]


def build_report(jobs: Jobs, budget: str, report_dir: Path) -> str:
    """The markdown (and `claims.json`, the summary figure) from the records alone."""
    frame = robust_frame(jobs, budget, report_dir)
    claims = load_claims("yan2020")
    tags = list(dict.fromkeys(TAGS.get(budget, [])))
    sections = [section(frame[frame["tag"] == t], t, claims) for t in tags]
    verdicts = []
    for claim in claims.values():
        rows = frame[frame["tag"] == claim.section]
        tested = claim.section in tags and not rows.empty
        why = claim.reason or f"budget {budget} runs no {claim.section} sweep"
        verdicts.append(judge(claim, rows, claim.section) if tested else not_testable(claim, why))
    records = check_records(jobs, BUDGETS, budget, reports_dir(jobs, report_dir))
    checks = check_rows(records, report_dir)
    masking = check_verdicts(checks)
    write_claims(report_dir / "claims.json", verdicts + masking)
    third = {c.id for c in claims.values() if "third table" in c.source}
    tested = [v for v in verdicts if v.verdict != "not testable here"]
    headline = [v for v in tested if v.claim not in third]
    if not headline:  # no paper numbers in this budget's setting: the sections' means instead
        headline = [c["rows"][0]["v"] for s in sections for c in s["contrasts"]]
    labels = {v.claim: headline_label(v, claims) for v in headline + tested}
    for v in headline:  # a row that could not be judged says why
        if v.verdict == "not testable here":
            labels[v.claim] += f" ({v.reason})"
    labels.update(MASKING_LABELS)
    figure = differences_figure(sections, report_dir / "differences.png")
    return render(
        "robust.md.j2",
        budget=budget,
        headline=headline,
        labels=labels,
        figure=f"{report_dir.name}/{figure.name}" if figure else None,
        differs=differs(frame) if not frame.empty else [],
        sections=sections,
        floors=floor_rows(frame) if not frame.empty else [],
        third=[v for v in tested if v.claim in third],
        untested=untested_rows(verdicts),
        checks=checks,
        masking=masking,
        runs=run_rows(frame),
        failed=[f"{r.folder}/{r.job}" for r in frame[~frame["ok"]].itertuples()]
        if not frame.empty
        else [],
    )


def run_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per sweep folder read: its section, finished and planned jobs."""
    if frame.empty:
        return []
    grouped = frame.groupby(["folder", "tag"], sort=False)["ok"]
    table = grouped.agg(finished="sum", jobs="count").reset_index()
    return table.to_dict("records")


def untested_rows(verdicts: list[Verdict]) -> list[tuple[str, list[str]]]:
    """The claims not testable here, grouped by reason (in first-seen order)."""
    out: dict[str, list[str]] = {}
    for v in verdicts:
        if v.verdict == "not testable here":
            out.setdefault(v.reason, []).append(v.claim)
    return list(out.items())


def headline_label(v: Verdict, claims: dict[str, Claim]) -> str:
    """`ODENet vs CNN, MNIST clean, s=50` for a verdict (a YAML claim or a section's mean)."""
    claim = claims.get(v.claim)
    if claim is None:  # a section's contrast (`<tag>/<a>/<b>/<column>`)
        tag, a, b, _ = v.claim.split("/")
        return f"{MODELS[a]} vs {MODELS[b]}, {section_title(tag)}, mean"
    a, b = (MODELS[m] for m in claim.arms)
    what = label(claim.metric[len("test/acc/") :]) if claim.metric.startswith("test/") else "mean"
    return f"{a} vs {b}, {section_title(claim.section)}, {what}"


ROBUST = Reproduction.from_conf(
    "robust", "CNN vs ODENet vs TisODE under noise, FGSM and PGD (Yan et al. 2020)", build_report
)
