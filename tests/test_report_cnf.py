"""The combined CNF cpu report reads its parts' records in place (nothing stored twice)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from odelab.reports import REPRODUCTIONS
from odelab.reproduce import drop_part_copies, part_record, records_dir

CNF = REPRODUCTIONS["cnf"]


def test_cpu_sweeps_come_from_the_parts_records():
    own = records_dir("cnf", "cpu")
    for i in range(len(CNF.budgets["cpu"])):
        folder = part_record(CNF, "cpu", i)
        assert folder.is_dir(), f"sweep {i} of cnf cpu has no records anywhere"
        assert folder.parent != own, f"sweep {i} is stored in cnf_cpu although a part holds it"


def test_drop_part_copies_keeps_what_differs(tmp_path: Path):
    reports = tmp_path / "reports"
    part = records_dir("cnf", "cpu_select", reports) / "0" / "0"
    part.mkdir(parents=True)
    (part / "metrics.json").write_text('{"a": 1}')
    copy = records_dir("cnf", "cpu", reports)
    shutil.copytree(part.parent, copy / "0")
    assert drop_part_copies(CNF, "cpu", reports) == [f"sweep 0 = {part.parent}"]
    assert not (copy / "0").exists() and part_record(CNF, "cpu", 0, reports) == part.parent
    shutil.copytree(part.parent, copy / "0")
    (copy / "0" / "0" / "metrics.json").write_text('{"a": 2}')  # a different run: kept
    assert drop_part_copies(CNF, "cpu", reports) == []
    assert (copy / "0" / "0" / "metrics.json").read_text() == '{"a": 2}'


# --- verdicts recomputed from the records, independently of the report code ----------------

REPORTS = Path(__file__).resolve().parents[1] / "experiments" / "reports"


def _runs(part: str) -> list[tuple[dict[str, str], dict[str, float], dict]]:
    """(overrides, metrics, config) of every finished run of a part budget, read as plain files."""
    import json

    import yaml

    out = []
    for metrics in sorted((REPORTS / f"cnf_{part}" / "records").glob("*/*/metrics.json")):
        job = json.loads((metrics.parent / "job.json").read_text())
        overrides = dict(o.split("=", 1) for o in job["overrides"] if "=" in o)
        config = yaml.safe_load((metrics.parent / "config.yaml").read_text())
        out.append((overrides, json.loads(metrics.read_text()), config))
    return out


def _t_interval(diffs: list[float]) -> tuple[float, float]:
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def _committed(claim: str) -> dict:
    import json

    rows = json.loads((REPORTS / "cnf_cpu" / "claims.json").read_text())
    return next(r for r in rows if r["claim"] == claim)


def test_hutchinson_verdict_matches_the_records():
    nll = {}
    for o, m, _ in _runs("cpu_targets"):
        nll[o["data.name"], o["seed"], o["trace"]] = m["test/nll"]
    diffs = [nll[t, s, "hutchinson"] - nll[t, s, "exact"] for (t, s, tr) in nll if tr == "exact"]
    low, high = _t_interval(diffs)
    row = _committed("hutchinson_matches_exact")
    assert row["n"] == len(diffs) == 16
    assert (row["low"], row["high"]) == pytest.approx((low, high), rel=1e-4)
    # margin 0.05 nats: the interval lies inside it, so "reproduced"
    assert row["verdict"] == ("reproduced" if -0.05 <= low and high <= 0.05 else row["verdict"])


def test_rnode_verdicts_match_the_records():
    runs = _runs("cpu_rnode_8gaussians") + _runs("cpu_rnode_2spirals")
    by = {}
    for o, m, _ in runs:
        key = (o["data.name"], o["model.flow.learn_t_end"], o["seed"])
        nfe = m["train/nfe_forward_epoch"] + m.get("train/nfe_backward_epoch", 0.0)
        by[(*key, float(o["model.kinetic_weight"]))] = (nfe, m["test/nll"])
    pairs = [(by[(*k[:3], 0.03)], by[(*k[:3], 0.0)]) for k in by if k[3] == 0.0]
    for claim, index in (("rnode_cuts_nfe", 0), ("rnode_equal_likelihood", 1)):
        low, high = _t_interval([a[index] - b[index] for a, b in pairs])
        row = _committed(claim)
        assert row["n"] == len(pairs) == 8
        assert (row["low"], row["high"]) == pytest.approx((low, high), rel=1e-4)
    assert _committed("rnode_cuts_nfe")["verdict"] == "reproduced"  # interval below zero


def test_cnf_vs_planar_verdict_matches_the_records():
    nll = {}
    for o, m, _ in _runs("cpu_capacity"):
        size = o.get("model.flow.layers") or o.get("model.flow.field.units")
        nll[o["experiment"], size, o["data.name"], o["seed"]] = m["test/nll"]
    diffs = [
        nll["cnf_fast", "64", t, s] - v
        for (e, k, t, s), v in nll.items()
        if e == "planar_flow" and k == "64"
    ]
    low, high = _t_interval(diffs)
    row = _committed("cnf_beats_planar")
    assert row["n"] == len(diffs) == 4
    assert (row["low"], row["high"]) == pytest.approx((low, high), rel=1e-4)
    assert row["verdict"] == ("within noise" if low < 0 < high else row["verdict"])
