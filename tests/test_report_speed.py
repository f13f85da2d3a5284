"""The speed report's verdicts: recomputed from the committed records they match claims.json,
and the interval of a bound is scipy's t interval of the per-repeat ratios."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from odelab.hydra_setup import repo_root
from odelab.records.speed import SpeedBench
from odelab.reports import speed
from odelab.reports.base import load_sweeps
from odelab.reports.claims import read_claims
from odelab.reports.records import load_record

REPORT = repo_root() / "experiments" / "reports" / "speed_cpu"


def _inputs():
    jobs = load_sweeps(REPORT / "records")
    bench = load_record(REPORT / "records" / "bench" / "bench_speed.json", SpeedBench)
    return speed.seminorm_frame(jobs, "cpu"), bench


def test_verdicts_recomputed_from_records_match_claims_json() -> None:
    frame, bench = _inputs()
    ours = {v.claim: v for v in speed.verdicts(frame, bench, "cpu")}
    committed = {v.claim: v for v in read_claims(REPORT / "claims.json")}
    assert set(ours) == set(committed) == set(speed.CLAIMS)
    for claim, v in committed.items():
        assert ours[claim].verdict == v.verdict, claim
        assert ours[claim].n == v.n, claim
        if v.mean is not None:
            assert ours[claim].mean == pytest.approx(v.mean, rel=1e-5), claim


def test_overhead_bound_is_the_t_interval_of_per_repeat_ratios() -> None:
    _, bench = _inputs()
    ms = bench.overhead["ms_per_step"]
    ratios = np.array(ms["odelab"]["seconds"]) / np.array(ms["plain"]["seconds"])
    low, high = stats.t.interval(0.95, len(ratios) - 1, ratios.mean(), stats.sem(ratios))
    verdict = speed.verdicts(*_inputs(), "cpu")
    v = next(x for x in verdict if x.claim == "framework_overhead")
    assert (v.low, v.high) == pytest.approx((low, high), rel=1e-6)
    target = speed.CLAIMS["framework_overhead"].threshold
    expected = "reproduced" if high < target else "contradicted" if low > target else "within noise"
    assert v.verdict == expected


def test_seminorm_saving_is_computed_per_seed_from_the_runs() -> None:
    frame, _ = _inputs()
    cnf = frame[frame["tag"] == "seminorm_cnf"]
    pivot = cnf.pivot(index="seed", columns="norm", values="backward")
    expected = sorted(100 * (1 - pivot["seminorm"] / pivot["full"]))
    assert sorted(speed._saving(frame, "seminorm_cnf")) == pytest.approx(expected)
    # The ODE-Net took identical backward steps under both norms in these runs.
    assert speed._saving(frame, "seminorm_odenet") == [0.0, 0.0, 0.0]


def test_gpu_claims_are_not_testable_without_a_gpu_record() -> None:
    frame, bench = _inputs()
    judged = {v.claim: v for v in speed.verdicts(frame, bench, "cpu")}
    for claim in ("capture_rknet_speedup", "fast_odenet_speedup", "torchode_speedup"):
        assert judged[claim].verdict == "not testable here"
    assert json.loads((REPORT / "claims.json").read_text())  # written, non-empty
