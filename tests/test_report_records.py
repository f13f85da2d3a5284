"""Committed reports re-render byte for byte from their committed records; selection is on
validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from odelab.errors import ConfigError
from odelab.hydra_setup import repo_root
from odelab.reports import REPRODUCTIONS, scorecard
from odelab.reports.claims import read_claims
from odelab.reproduce import render
from odelab.sweeps import JobRecord, format_summary
from odelab.train import check_selection

REPORTS = repo_root() / "experiments" / "reports"


def committed_reports() -> list[tuple[str, str, Path]]:
    """(reproduction, budget, markdown) for every committed report."""
    return scorecard.committed_reports(tuple(REPRODUCTIONS), REPORTS)


def test_every_report_has_records_and_a_reproduction():
    reports = committed_reports()
    assert reports, "no generated report is committed"
    names = {md.name for _, _, md in reports}
    # SCORECARD.md is rendered from the claims.json files (tests/test_scorecard.py)
    loose = sorted(
        md.name for md in REPORTS.glob("*.md") if md.name not in names | {"SCORECARD.md"}
    )
    assert not loose, f"reports without a reproduction (typed by hand?): {loose}"
    missing = [md.name for _, _, md in reports if not (md.with_suffix("") / "records").is_dir()]
    assert not missing, f"reports without committed records: {missing}"


@pytest.mark.parametrize(("name", "budget", "md"), committed_reports(), ids=lambda v: str(v))
def test_report_rerenders_identically(name: str, budget: str, md: Path, tmp_path: Path):
    records = md.with_suffix("") / "records"
    text = render(REPRODUCTIONS[name], budget, records, tmp_path / md.stem)
    assert text == md.read_text(), (
        f"{md.name} differs from its re-rendering; regenerate it with "
        f"`python experiments/reproduce.py {name} --budget {budget} --report-only`"
    )
    # The verdicts the scorecard reads re-render too, and the report shows each tested one.
    committed = md.with_suffix("") / "claims.json"
    if committed.is_file():
        assert (tmp_path / md.stem / "claims.json").read_text() == committed.read_text()
        tested = [v.verdict for v in read_claims(committed) if v.verdict != "not testable here"]
        assert all(verdict in text for verdict in tested), md.name


@pytest.mark.parametrize(("name", "budget", "md"), committed_reports(), ids=lambda v: str(v))
def test_report_opens_with_its_headline_and_its_links_resolve(name: str, budget: str, md: Path):
    """The brief's shape: the headline table (paper vs ours, verdict) within the first 25
    lines after the title, at most 300 lines, every linked figure present."""
    lines = md.read_text().splitlines()
    assert len(lines) <= 300, f"{md.name}: {len(lines)} lines"
    summary = lines[: next(i for i, line in enumerate(lines) if line.startswith("## "))]
    assert len(summary) <= 26 and "| Claim | Paper |" in "\n".join(summary), md.name
    links = re.findall(r"\]\(([^)]+\.png)\)", "\n".join(lines))
    missing = [link for link in links if not (md.parent / link).is_file()]
    assert not missing, f"{md.name} links missing figures: {missing}"


def test_accuracy_sweep_picks_the_highest_validation_accuracy(tmp_path: Path):
    records = [
        JobRecord(
            i,
            [f"model.lr={lr}"],
            "completed",
            "val/acc",
            acc,
            1.0,
            None,
            str(tmp_path / str(i)),
            direction="maximize",
        )
        for i, (lr, acc) in enumerate([(0.1, 0.91), (0.01, 0.97), (0.001, 0.42)])
    ]
    summary = format_summary(records, tmp_path, records[0].direction)
    assert "Best (maximize val/acc): job 1, 0.97," in summary


def test_every_experiment_selects_on_validation(make_cfg):
    experiments = sorted(p.stem for p in (repo_root() / "conf" / "experiment").glob("*.yaml"))
    for experiment in experiments:
        cfg = make_cfg(f"experiment={experiment}")
        assert str(cfg.optimized_metric).startswith("val/"), experiment
        assert cfg.optimized_direction in ("minimize", "maximize"), experiment
        check_selection(cfg)
    with pytest.raises(ConfigError, match="optimized_metric=test/acc"):
        check_selection(make_cfg("experiment=robust_cnn", "optimized_metric=test/acc"))
    with pytest.raises(ConfigError, match="optimized_direction='up'"):
        check_selection(make_cfg("experiment=robust_cnn", "optimized_direction=up"))


def test_soak_report_rerenders_identically():
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("soak", repo_root() / "experiments" / "soak.py")
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    folder = REPORTS / "soak"
    data = json.loads((folder / "soak.json").read_text())
    assert soak.render(data) == (folder / "soak.md").read_text(), (
        "soak.md differs from its re-rendering: python experiments/soak.py --report-only"
    )
