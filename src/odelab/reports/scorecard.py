"""The scorecard: every claim of every paper with its best verdict, and seed 003's questions.

`python -m odelab.reports.scorecard` writes experiments/reports/SCORECARD.md (`--check`: exit 1
when the committed file is stale; `--rerender`: first re-render every committed report). Its
inputs are data: the claims of `conf/claims/*.yaml` (questions.yaml holds the paper titles and
the questions) and the verdicts in every committed `<report>_<budget>/claims.json`. A verdict
belongs to the claim of its id (when two files share an id, to the one whose `report` is the
verdict's). The best verdict of a claim is chosen by:

1. a tested verdict (reproduced / within noise / contradicted) beats "not testable here";
2. then a budget the claim names in `authors_setup` (its setup made the authors' on the factor
   that decides the claim, e.g. the baseline trained as their code trains it);
3. then the larger budget, in `BUDGET_ORDER` (a part such as `cpu_seminorm` ranks just below
   its whole `cpu`; an unknown name lowest);
4. then the larger n, then report and budget names (so the choice is deterministic).

Where another budget's tested verdict differs from the chosen one, the row says so (`others`).
A claim without a verdict shows "not testable here" with its YAML `reason` and `study`. A
question's answer is a sentence template in questions.yaml rendered with the verdicts of the
claims it names (patterns over `file:id`); it types no number.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import asdict
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from odelab.errors import ConfigError
from odelab.hydra_setup import repo_root
from odelab.reports.claims import CLAIMS_DIR, VERDICTS, all_claims, read_claims
from odelab.reports.render import ci, num, render, render_string
from odelab.reports.validity import FLAGGED, read_flags

REPORTS_DIR = repo_root() / "experiments" / "reports"
BUDGET_ORDER = ("quick", "offline", "fashion", "cpu", "gpu", "h100", "paper")
TESTED = VERDICTS[:3]
CLAIM_COLUMNS = (
    "paper id key order text paper_value unit kind report section reason study authors_setup"
).split()
VERDICT_COLUMNS = (
    "key name budget rank v_section verdict reason mean std mean_b std_b diff low high n".split()
)
DEFAULT_ANSWER = "{{ summary }}{{ (' ' ~ evidence) if evidence else '' }}"


def budget_rank(budget: str) -> int:
    """Rank of a budget for the best-verdict rule (higher is larger); see the module doc."""
    base, _, part = budget.partition("_")
    return 2 * BUDGET_ORDER.index(base) + (not part) if base in BUDGET_ORDER else -1


def split_report(stem: str, report: str | None, names: tuple[str, ...]) -> tuple[str, str]:
    """(report name, budget) of a folder `<report>_<budget>`: the verdict's own report name
    when it is a prefix, else the longest known reproduction name that is."""
    for name in ([report] if report else []) + sorted(names, key=len, reverse=True):
        if stem.startswith(f"{name}_"):
            return name, stem[len(name) + 1 :]
    return stem, ""


def claims_frame(claims_dir: Path = CLAIMS_DIR) -> pd.DataFrame:
    """One row per claim of every YAML file (`paper`, `id`, `key` = "paper:id", text, ...)."""
    rows = [
        {**asdict(c), "key": f"{paper}:{c.id}", "order": i}
        for paper, claims in all_claims(claims_dir).items()
        for i, c in enumerate(claims.values())
    ]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def verdicts_frame(claims: pd.DataFrame, reports_dir: Path, names: tuple[str, ...]) -> pd.DataFrame:
    """One row per verdict of every committed claims.json, with its claim's key and budget."""
    rows = []
    for path in sorted(reports_dir.glob("*/claims.json")):
        for v in read_claims(path):
            name, budget = split_report(path.parent.name, v.report, names)
            keys = claims.loc[claims["id"] == v.claim]
            if len(keys) > 1:
                keys = keys.loc[keys["report"] == name]
            row = {**asdict(v), "name": name, "budget": budget, "v_section": v.section}
            rows += [{**row, "key": key, "rank": budget_rank(budget)} for key in keys["key"]]
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def scorecard_frame(
    claims: pd.DataFrame, verdicts: pd.DataFrame, reports_dir: Path | None = None
) -> pd.DataFrame:
    """Every claim with its best verdict (the module doc's rule), or "not testable here" and
    its YAML reason; `link`: its report (at the verdict's section where `reports_dir` holds
    the report with such a heading)."""
    setups = claims.set_index("key")["authors_setup"]
    tested = verdicts.assign(
        tested=verdicts["verdict"].isin(TESTED),
        setup=[
            b in setups.get(k, ()) for k, b in zip(verdicts["key"], verdicts["budget"], strict=True)
        ],
    ).sort_values(
        ["key", "tested", "setup", "rank", "n", "name", "budget"],
        ascending=[True, False, False, False, False, True, True],
    )
    best = (
        tested.drop_duplicates("key")
        .drop(columns=["tested", "setup"])
        .rename(columns={"reason": "v_reason"})
    )
    chosen = best.set_index("key")["verdict"]
    others = {
        key: [
            {"report": f"{r.name}_{r.budget}", "verdict": r.verdict, "setup": r.setup}
            for r in group.itertuples()
            if r.tested and r.verdict != chosen[key]
        ]
        for key, group in tested.groupby("key")
    }
    rows = claims.merge(best, on="key", how="left")
    rows["verdict"] = rows["verdict"].fillna("not testable here")
    rows["reason"] = rows["v_reason"].where(rows["v_reason"].notna(), rows["reason"])
    rows["n"] = rows["n"].fillna(0).astype(int)
    rows["link"] = [_link(r, reports_dir) for r in rows.itertuples()]
    rows["others"] = [others.get(k, []) for k in rows["key"]]
    rows = rows.astype(object).where(rows.notna(), None)
    return rows.sort_values(["paper", "order"]).reset_index(drop=True)


def _anchors(report: Path) -> set[str]:
    """The anchors GitHub gives the report's headings: lower case, punctuation dropped, spaces
    as hyphens."""
    lines = report.read_text().splitlines() if report.is_file() else []
    headings = (line.lstrip("#").strip().lower() for line in lines if line.startswith("#"))
    return {re.sub(r"[^\w\- ]", "", h).replace(" ", "-") for h in headings}


def _link(row: Any, reports_dir: Path | None) -> str | None:
    """The claim's report, at the section its verdict names where the report has a heading of
    that name (a section tag such as `periodic` has none: the report alone)."""
    if not isinstance(row.name, str):
        return None
    report = f"{row.name}_{row.budget}.md"
    tag = row.v_section if isinstance(row.v_section, str) else ""
    anchor = tag.lower().replace(" ", "-")
    known = _anchors(reports_dir / report) if reports_dir is not None else {anchor}
    return f"{report}#{anchor}" if tag and anchor in known else report


def _brief(row: dict[str, Any], label: str) -> str:
    """ "label: verdict (Δ 0.3 [-0.2, 0.8], n = 3)" from one verdict row."""
    what, value = ("Δ", row["diff"]) if row["diff"] is not None else ("ours", row["mean"])
    interval = f" {ci(row['low'], row['high'])}" if row["n"] > 1 else ""
    unit = f" {row['unit']}" if row["unit"] else ""
    return f"{label}: {row['verdict']} ({what} {num(value)}{unit}{interval}, n = {row['n']})"


def _claims(n: int, what: str = "") -> str:
    return f"{n} {what}claim{'' if n == 1 else 's'}"


def _summary(chosen: pd.DataFrame, counts: pd.Series, studies: list[str]) -> str:
    tested = int(counts.sum())
    pending, one = len(chosen) - tested, len(chosen) == 1
    if chosen.empty:
        text = "No evidence yet: no claim in the claims files bears on it."
    elif not tested:
        text = (
            f"No evidence yet: {_claims(len(chosen))} {'bears' if one else 'bear'} on it and "
            f"no committed report tests {'it' if one else 'any of them'}."
        )
    else:
        parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        more = f"; {pending} more not testable here" if pending else ""
        text = f"Of the {_claims(tested, 'tested ')} that bear on it, {parts}{more}."
    if studies and (not tested or pending):
        named = " and ".join(studies)
        will = "answer it" if not tested else "test more"
        text += f" {named[:1].upper()}{named[1:]} will {will}."
    return text


def answer(question: dict[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
    """A question with its answer rendered from the verdicts of the claims it names."""
    patterns = question.get("claims") or []
    chosen = rows.loc[[any(fnmatch(k, p) for p in patterns) for k in rows["key"]]]
    tested = chosen.loc[chosen["verdict"].isin(TESTED)]
    counts = tested["verdict"].value_counts().reindex(list(TESTED), fill_value=0)
    studies = sorted({s for s in chosen["study"] if s} | {question.get("study") or ""} - {""})
    # The labelled claims are the ones the question is about; the rest, up to `limit`,
    # contradicted first (a surprise is what a reader needs to see).
    labels, limit = question.get("labels") or {}, int(question.get("limit", 4))
    order = ("contradicted", "reproduced", "within noise")
    shown = sorted(
        tested.to_dict("records"),
        key=lambda r: (r["key"] not in labels, order.index(r["verdict"]), r["order"]),
    )
    evidence = "; ".join(
        _brief(r, labels.get(r["key"], r["id"].replace("_", " "))) for r in shown[:limit]
    )
    if len(shown) > limit:
        evidence += f"; {len(shown) - limit} more in the tables below"
    context = {
        "summary": _summary(chosen, counts, studies),
        "evidence": f"{evidence}." if evidence else "",
        "claim": {r["key"]: r for r in chosen.to_dict("records")},
        "counts": counts.to_dict(),
        "tested": len(tested),
        "pending": len(chosen) - len(tested),
        "studies": studies,
    }
    text = render_string(question.get("answer") or DEFAULT_ANSWER, **context).strip()
    return {"id": question["id"], "question": question["question"], "answer": text}


def load_questions(claims_dir: Path = CLAIMS_DIR) -> dict[str, Any]:
    """questions.yaml: paper titles (`papers`), the seed papers, the questions."""
    path = claims_dir / "questions.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    for i, q in enumerate(data.get("questions") or []):
        for key in ("id", "question", "claims"):
            if key not in q:
                raise ConfigError(f"{path}: question {i}: missing key {key!r}")
    return data


def validity_frame(reports_dir: Path) -> pd.DataFrame:
    """One row per arm of every committed `validity.json` ("Is it an ODE?"), with its report."""
    rows = [
        {"report": path.parent.name, **arm}
        for path in sorted(reports_dir.glob("*/validity.json"))
        for arm in read_flags(path)
    ]
    return pd.DataFrame(rows, columns=["report", "arm", "runs", "measured", "flag"])


def build(
    claims_dir: Path = CLAIMS_DIR, reports_dir: Path = REPORTS_DIR, names: tuple[str, ...] = ()
) -> str:
    """SCORECARD.md's text from the claims YAML and the committed claims.json files."""
    claims = claims_frame(claims_dir)
    rows = scorecard_frame(claims, verdicts_frame(claims, reports_dir, names), reports_dir)
    meta = load_questions(claims_dir)
    titles, seeds = meta.get("papers") or {}, meta.get("seed_papers") or []
    groups = [
        {"paper": paper, "title": titles.get(paper, paper), "rows": group.to_dict("records")}
        for paper, group in rows.groupby("paper", sort=False)
    ]
    groups.sort(key=lambda g: seeds.index(g["paper"]) if g["paper"] in seeds else len(seeds))
    counts = pd.crosstab(rows["paper"], pd.Categorical(rows["verdict"], VERDICTS), dropna=False)
    counts.loc["all"] = counts.sum()
    arms = validity_frame(reports_dir)
    measured = arms[arms["measured"] > 0]
    return render(
        "scorecard.md.j2",
        verdicts=VERDICTS,
        counts=[{"paper": p, **c} for p, c in counts.astype(int).to_dict("index").items()],
        total=len(rows),
        tested=int(rows["verdict"].isin(TESTED).sum()),
        seed_claims=int(rows["paper"].isin(seeds).sum()),
        seeds=seeds,
        missing=[s for s in seeds if s not in set(rows["paper"])],
        groups=groups,
        questions=[answer(q, rows) for q in meta.get("questions") or []],
        validity={
            "reports": arms["report"].nunique(),
            "measured_reports": sorted(measured["report"].unique()),
            "arms": len(measured),
            "flagged": measured[measured["flag"] == FLAGGED].to_dict("records"),
        },
    )


def committed_reports(names: tuple[str, ...], reports_dir: Path = REPORTS_DIR) -> list[tuple]:
    """(reproduction, budget, markdown) of every committed `<name>_<budget>.md` report."""
    found = [(*split_report(md.stem, None, names), md) for md in sorted(reports_dir.glob("*.md"))]
    return [(name, budget, md) for name, budget, md in found if budget]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if SCORECARD.md is stale")
    parser.add_argument(
        "--rerender", action="store_true", help="first re-render every report from its records"
    )
    args = parser.parse_args(argv)
    from odelab.reports import REPRODUCTIONS
    from odelab.reproduce import write_report

    try:
        for name, budget, _ in committed_reports(tuple(REPRODUCTIONS)) if args.rerender else []:
            print(f"report: {write_report(REPRODUCTIONS[name], budget)}")
        text = build(names=tuple(REPRODUCTIONS))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = REPORTS_DIR / "SCORECARD.md"
    if args.check:
        same = path.is_file() and path.read_text() == text
        print(f"{path}: {'up to date' if same else 'stale; run make reports'}")
        return 0 if same else 1
    path.write_text(text)
    print(f"scorecard: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
