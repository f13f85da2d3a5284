"""The "Is it an ODE?" section: arms, flags from paired intervals, the scorecard's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from odelab.reports import scorecard, validity
from odelab.reports.base import JobResult
from odelab.runs import Run


def _job(num: int, model: str, seed: int, **metrics: float) -> JobResult:
    overrides = [f"model={model}", f"seed={seed}", "logger=csv"]
    run = Run(Path(f"/runs/{num}"), None, {"test/nfe_forward": 20.0, **metrics}, overrides)
    return JobResult(num, run)


def _checked(acc: float, finer: float, recon: float = 0.1) -> dict[str, float]:
    return {
        "test/train_solver/acc": acc,
        "test/finer_dopri5/acc": finer,
        "test/finer_fixed4x/acc": finer,
        "test/finer_dopri5/state_rel_change": 0.05,
        "test/finer_fixed4x/state_rel_change": 0.04,
        "test/reconstruction_rel_err": recon,
    }


def test_flags_follow_the_paired_interval_of_the_accuracy_change() -> None:
    drops = [(0.98, 0.90), (0.97, 0.88), (0.99, 0.91)]  # 7-9 points lost every seed
    jitter = [(0.98, 0.985), (0.97, 0.965), (0.99, 0.99)]  # +0.5, -0.5, 0 points
    jobs = [_job(i, "leans", i, **_checked(a, f)) for i, (a, f) in enumerate(drops)]
    jobs += [_job(3 + i, "flows", i, **_checked(a, f)) for i, (a, f) in enumerate(jitter)]
    jobs += [_job(6 + i, "old", i) for i in range(2)]  # records from before the check
    jobs.append(JobResult(9, Run(Path("/runs/9"), None, {"test/acc": 0.9}, ["model=cnn"])))
    rows = {r.arm: r for r in validity.arms(jobs)}
    assert set(rows) == {"model=leans", "model=flows", "model=old"}  # the CNN has no NFE
    mean, low, high = rows["model=leans"].acc_delta["finer_dopri5"]
    assert mean == pytest.approx(-8.333, abs=1e-3) and high < 0
    assert rows["model=leans"].flag == validity.FLAGGED
    assert rows["model=flows"].flag == "holds"
    assert rows["model=old"].flag == "not measured" and rows["model=old"].runs == 2
    text = validity.section(list(rows.values()))
    assert text.startswith("## Is it an ODE?") and "6 of 8 ODE runs measured" in text
    assert "model=old" not in text  # unmeasured arms are counted, not tabled


def test_unmeasured_reports_say_how_to_add_the_checks_and_scorecard_lists_flags(
    tmp_path: Path,
) -> None:
    old = [_job(i, "odenet", i) for i in range(3)]
    text = validity.section(validity.arms(old))
    assert "Not measured" in text and validity.ADD_CHECK in text
    leaning = [_job(i, "leans", i, **_checked(0.98, 0.90 - 0.01 * i)) for i in range(3)]
    validity.write_validity(tmp_path / "a_cpu" / "validity.json", validity.arms(leaning))
    validity.write_validity(tmp_path / "b_cpu" / "validity.json", validity.arms(old))
    frame = scorecard.validity_frame(tmp_path)
    assert list(frame["report"]) == ["a_cpu", "b_cpu"]
    assert list(frame["flag"]) == [validity.FLAGGED, "not measured"]


def test_models_without_accuracy_get_no_flag() -> None:
    metrics = _checked(0.0, 0.0)
    del metrics["test/train_solver/acc"], metrics["test/finer_dopri5/acc"]
    del metrics["test/finer_fixed4x/acc"]
    (row,) = validity.arms([_job(i, "field", i, **metrics) for i in range(3)])
    assert row.flag == "no accuracy" and row.reconstruction[0] == pytest.approx(0.1)


def test_a_model_of_several_blocks_shows_its_worst_block() -> None:
    metrics = {
        "test/decoder.block/finer_dopri5/state_rel_change": 1e-4,
        "test/encoder.rnn.block/finer_dopri5/state_rel_change": 5e-4,
        "test/decoder.block/reconstruction_rel_err": 2e-4,
        "test/encoder.rnn.block/reconstruction_rel_err": 1e-3,
    }
    (row,) = validity.arms([_job(i, "latent", i, **metrics) for i in range(2)])
    assert row.measured == 2 and row.flag == "no accuracy"
    assert row.state_change["finer_dopri5"][0] == pytest.approx(5e-4)
    assert row.reconstruction[0] == pytest.approx(1e-3)


def test_one_run_gets_no_flag_and_checkpoint_paths_do_not_split_arms() -> None:
    jobs = [_job(0, "solo", 0, **_checked(0.98, 0.90))]
    jobs[0].run.overrides.append("ckpt_path=/runs/0/last.ckpt")
    jobs.append(_job(1, "pair", 0, **_checked(0.98, 0.90)))
    jobs.append(_job(2, "pair", 1, **_checked(0.97, 0.88)))
    jobs[2].run.overrides.append("ckpt_path=/runs/2/last.ckpt")
    rows = {r.arm: r for r in validity.arms(jobs)}
    assert set(rows) == {"model=solo", "model=pair"}
    assert rows["model=solo"].flag == "one run: no interval"
