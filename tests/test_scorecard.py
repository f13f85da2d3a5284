"""The scorecard is data: its rows come from the claims YAML and the committed claims.json, the
best verdict follows the documented rule, and the committed SCORECARD.md re-renders exactly."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from odelab.reports import REPRODUCTIONS
from odelab.reports.claims import CLAIMS_DIR, VERDICTS
from odelab.reports.scorecard import (
    REPORTS_DIR,
    budget_rank,
    build,
    claims_frame,
    scorecard_frame,
    verdicts_frame,
)


def test_committed_scorecard_rerenders_identically():
    text = build(names=tuple(REPRODUCTIONS))
    assert text == (REPORTS_DIR / "SCORECARD.md").read_text(), (
        "SCORECARD.md is stale; run `make reports`"
    )


def test_scorecard_links_reach_a_report_and_a_heading_in_it():
    """Every report link of SCORECARD.md names a committed report, and every #anchor one of
    its headings (as GitHub writes heading anchors; written out here for the check)."""
    import re

    text = (REPORTS_DIR / "SCORECARD.md").read_text()
    links = re.findall(r"\]\(([\w.-]+\.md)(?:#([\w-]+))?\)", text)
    assert links
    for report, anchor in set(links):
        lines = (REPORTS_DIR / report).read_text().splitlines()
        if anchor:
            slugs = {
                "".join(
                    c for c in line.lstrip("#").strip().lower() if c.isalnum() or c in "_- "
                ).replace(" ", "-")
                for line in lines
                if line.startswith("#")
            }
            assert anchor in slugs, (report, anchor)


def test_scorecard_covers_the_seed_papers_and_the_six_questions():
    claims = claims_frame()
    rows = scorecard_frame(claims, verdicts_frame(claims, REPORTS_DIR, tuple(REPRODUCTIONS)))
    seeds = yaml.safe_load((CLAIMS_DIR / "questions.yaml").read_text())["seed_papers"]
    assert len(rows.loc[rows["paper"].isin(seeds)]) >= 30
    assert set(rows["verdict"]) <= set(VERDICTS)
    questions = yaml.safe_load((CLAIMS_DIR / "questions.yaml").read_text())["questions"]
    assert len(questions) == 6


def test_budget_rank_orders_parts_below_their_whole():
    assert budget_rank("quick") < budget_rank("cpu_seminorm") < budget_rank("cpu")
    assert budget_rank("cpu") < budget_rank("paper")
    assert budget_rank("nonsense") == -1


def _verdict(claim: str, verdict: str, n: int, mean: float) -> dict:
    return {
        "claim": claim, "paper_value": 1.0, "mean": mean, "std": 0.1, "n": n,
        "low": mean - 0.2, "high": mean + 0.2, "verdict": verdict, "reason": "",
        "report": "toy", "section": None,
    }  # fmt: skip


def test_best_verdict_prefers_tested_then_larger_budget(tmp_path: Path):
    claims = tmp_path / "claims"
    claims.mkdir()
    base = {"source": "t", "metric": "m", "kind": "value", "report": "toy"}
    (claims / "toy.yaml").write_text(
        yaml.safe_dump(
            {
                "claims": [
                    {"id": "a", "text": "A.", **base},
                    {"id": "b", "text": "B.", **base},
                    {"id": "c", "text": "C.", "reason": "needs a GPU", **base},
                ]
            }
        )  # fmt: skip
    )
    reports = tmp_path / "reports"
    for budget, rows in {
        "quick": [_verdict("a", "reproduced", 3, 1.0), _verdict("b", "within noise", 3, 2.0)],
        "cpu": [_verdict("a", "contradicted", 3, 5.0), _verdict("b", "not testable here", 0, 0)],
    }.items():
        (reports / f"toy_{budget}").mkdir(parents=True)
        (reports / f"toy_{budget}" / "claims.json").write_text(json.dumps(rows))
    frame = claims_frame(claims)
    rows = scorecard_frame(frame, verdicts_frame(frame, reports, ("toy",))).set_index("id")
    # a: both tested, the larger budget wins even though it is the worse verdict
    assert rows.loc["a", "verdict"] == "contradicted" and rows.loc["a", "budget"] == "cpu"
    # b: a tested verdict beats "not testable here" from a larger budget
    assert rows.loc["b", "verdict"] == "within noise" and rows.loc["b", "budget"] == "quick"
    # c: no report holds it: untested, with the YAML's reason
    assert rows.loc["c", "verdict"] == "not testable here"
    assert rows.loc["c", "reason"] == "needs a GPU"


def test_authors_setup_budget_wins_and_the_row_names_the_other_verdict(tmp_path: Path):
    """A claim's `authors_setup` budget (its setup the authors' on the deciding factor) beats a
    larger budget; the other budget's differing verdict is kept beside it, not dropped."""
    claims = tmp_path / "claims"
    claims.mkdir()
    base = {"source": "t", "metric": "m", "kind": "value", "report": "toy"}
    (claims / "toy.yaml").write_text(
        yaml.safe_dump(
            {
                "claims": [
                    {
                        "id": "a",
                        "text": "A.",
                        "budgets": ["cpu", "zz_ref"],
                        "authors_setup": ["zz_ref"],
                        **base,
                    },
                    {"id": "b", "text": "B.", "budgets": ["cpu", "zz_ref"], **base},
                ]
            }
        )  # fmt: skip
    )
    reports = tmp_path / "reports"
    for budget, rows in {
        "cpu": [_verdict("a", "contradicted", 3, 5.0), _verdict("b", "contradicted", 3, 5.0)],
        "zz_ref": [_verdict("a", "reproduced", 3, 1.0), _verdict("b", "reproduced", 3, 1.0)],
    }.items():
        (reports / f"toy_{budget}").mkdir(parents=True)
        (reports / f"toy_{budget}" / "claims.json").write_text(json.dumps(rows))
    frame = claims_frame(claims)
    rows = scorecard_frame(frame, verdicts_frame(frame, reports, ("toy",))).set_index("id")
    # a: the authors' setup wins although `cpu` ranks higher and the name sorts first
    assert rows.loc["a", "budget"] == "zz_ref" and rows.loc["a", "verdict"] == "reproduced"
    assert [o["report"] for o in rows.loc["a", "others"]] == ["toy_cpu"]
    assert rows.loc["a", "others"][0]["verdict"] == "contradicted"
    # b: no authors_setup: the larger budget wins, and the other verdict is named
    assert rows.loc["b", "budget"] == "cpu"
    assert [o["report"] for o in rows.loc["b", "others"]] == ["toy_zz_ref"]


def test_authors_setup_must_be_one_of_the_claims_budgets(tmp_path: Path):
    import pytest

    from odelab.errors import ConfigError

    (tmp_path / "toy.yaml").write_text(
        yaml.safe_dump(
            {
                "claims": [
                    {
                        "id": "a",
                        "text": "A.",
                        "source": "t",
                        "metric": "m",
                        "kind": "value",
                        "budgets": ["cpu"],
                        "authors_setup": ["ref"],
                    }
                ]
            }
        )  # fmt: skip
    )
    with pytest.raises(ConfigError, match="authors_setup budget 'ref' is not in `budgets`"):
        claims_frame(tmp_path)
