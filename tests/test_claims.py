"""The claim evaluator on synthetic records whose verdict is known, the runs frame, and the
byte stability of claims.json."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from odelab.errors import ConfigError
from odelab.reports.claims import (
    Claim,
    evaluate,
    load_claims,
    not_testable,
    read_claims,
    write_claims,
)
from odelab.reports.records import RecordError, load_record

CONTRAST = Claim(
    id="a_beats_b",
    paper="test",
    text="a has a lower error than b.",
    source="synthetic",
    metric="error",
    kind="contrast",
    arms=("a", "b"),
    paired=True,
    direction="lower",
)
VALUE = Claim(
    id="err",
    paper="test",
    text="error 0.42",
    source="synthetic",
    metric="error",
    kind="value",
    paper_value=0.42,
    margin=0.05,
    direction="lower",
)
B = [2.0, 2.2, 1.9, 2.1]


@pytest.mark.parametrize("paired", [True, False])
def test_clear_win_tie_and_loss(paired: bool) -> None:
    claim = replace(CONTRAST, paired=paired)
    win = evaluate(claim, [1.0, 1.1, 0.9, 1.05], B)
    tie = evaluate(claim, [2.1, 2.0, 2.2, 1.9], B)
    loss = evaluate(claim, [3.0, 3.3, 2.9, 3.1], B)
    assert (win.verdict, tie.verdict, loss.verdict) == (
        "reproduced",
        "within noise",
        "contradicted",
    )
    assert win.low < win.diff < win.high < 0 < loss.low
    assert tie.low < 0 < tie.high
    assert win.n == 4 and win.mean_b == pytest.approx(2.05)


def test_pairing_removes_shared_seed_noise() -> None:
    """A seed effect shared by both arms hides the difference unpaired, not paired."""
    b = [1.0, 5.0, 9.0, 13.0]
    a = [x - 0.5 + d for x, d in zip(b, [0.0, 0.1, -0.1, 0.05], strict=True)]
    assert evaluate(CONTRAST, a, b).verdict == "reproduced"
    assert evaluate(replace(CONTRAST, paired=False), a, b).verdict == "within noise"


def test_value_and_bound() -> None:
    assert evaluate(VALUE, [0.44, 0.45, 0.43]).verdict == "reproduced"
    assert evaluate(VALUE, [0.30, 0.31, 0.29]).verdict == "reproduced"  # better than the paper
    assert evaluate(VALUE, [0.80, 0.82, 0.79]).verdict == "contradicted"
    assert evaluate(VALUE, [0.40, 0.60, 0.50]).verdict == "within noise"
    bound = replace(VALUE, kind="bound", threshold=1.0)
    assert evaluate(bound, [0.5, 0.6, 0.55]).verdict == "reproduced"
    assert evaluate(bound, [1.5, 1.6, 1.55]).verdict == "contradicted"


def test_missing_budget_is_not_testable() -> None:
    v = not_testable(replace(VALUE, budgets=("paper",)), "needs the paper budget")
    assert v.verdict == "not testable here" and v.n == 0 and v.reason == "needs the paper budget"
    assert [v.mean, v.std, v.low, v.high, v.diff] == [None] * 5
    # No finished run, or no seed both arms finished: nothing to test either.
    assert evaluate(VALUE, [None, float("nan")]).verdict == "not testable here"
    assert evaluate(CONTRAST, [1.0, None], [None, 2.0]).verdict == "not testable here"


def test_a_single_run_decides_by_its_point() -> None:
    v = evaluate(VALUE, [0.44])  # 0.02 worse than the paper, within the margin 0.05
    assert (v.verdict, v.n, v.low, v.high, v.std) == ("reproduced", 1, 0.44, 0.44, None)
    pair = evaluate(CONTRAST, [1.0], [2.0])
    assert (pair.verdict, pair.diff, pair.low, pair.high) == ("reproduced", -1.0, -1.0, -1.0)


def test_contrast_needs_both_arms() -> None:
    with pytest.raises(ValueError, match="contrast"):
        evaluate(CONTRAST, [1.0, 2.0])


def test_claims_json_is_byte_stable(tmp_path: Path) -> None:
    verdicts = [
        evaluate(CONTRAST, [1.0, 1.1, 0.9, 1.05], B),
        evaluate(VALUE, [0.44, 0.45, 0.43]),
        not_testable(VALUE, "needs a GPU budget"),
    ]
    first, second = tmp_path / "1" / "claims.json", tmp_path / "2" / "claims.json"
    write_claims(first, verdicts)
    write_claims(second, read_claims(first))
    assert first.read_bytes() == second.read_bytes()
    assert [v.verdict for v in read_claims(first)] == [v.verdict for v in verdicts]


def test_yaml_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "claims:\n  - {id: x, text: t, source: s, metric: m, kind: value, colour: red}\n"
    )
    with pytest.raises(ConfigError, match="claim x: unknown key 'colour'"):
        load_claims("p", tmp_path)
    with pytest.raises(ConfigError, match="known papers"):
        load_claims("absent", tmp_path)


def test_committed_claim_files_load() -> None:
    claims = load_claims("chen2018")
    assert claims and all(c.paper == "chen2018" for c in claims.values())


@dataclass
class _Rec:
    name: str
    seconds: list[float]
    note: str | None = None


def test_load_record_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"name": "x", "seconds": [1, 2.5]}')
    assert load_record(path, _Rec) == _Rec("x", [1.0, 2.5])
    path.write_text('{"name": "x", "seconds": "fast"}')
    with pytest.raises(RecordError, match=r"r\.json: field 'seconds': expected list, got str"):
        load_record(path, _Rec)
    path.write_text('{"seconds": []}')
    with pytest.raises(RecordError, match="field 'name': missing"):
        load_record(path, _Rec)


def test_runs_frame_columns(tmp_path: Path) -> None:
    from odelab.reports.base import JobResult
    from odelab.reports.frame import runs_frame, seed_values
    from odelab.runs import Run

    def job(num: int, seed: str, solver: str, err: float) -> JobResult:
        history = [
            {"epoch": 0, "val/error": 0.5, "val/nfe": 10.0},
            {"epoch": 1, "val/error": 0.3, "val/nfe": 20.0},
            {"epoch": 2, "val/error": 0.4, "val/nfe": 30.0},
        ]
        run = Run(
            tmp_path,
            None,
            {"test/error": err, "test/nfe_forward": 26.0},
            [f"seed={seed}", f"solver={solver}"],
            history,
            {},
            {"seconds": 3.0},
        )
        return JobResult(num, run)

    jobs = [job(0, "0", "dopri5", 0.1), job(1, "1", "dopri5", 0.2), job(2, "0", "rk4", 0.3)]
    df = runs_frame(jobs, best="val/error", best_mode="min")
    for col in (
        "job",
        "ok",
        "seed",
        "solver",
        "metric.test/error",
        "best.val/nfe",
        "nfe.test/nfe_forward",
        "device",
        "wall_s",
    ):
        assert col in df.columns, col
    assert list(df["best.val/nfe"]) == [20.0, 20.0, 20.0]  # the epoch with the lowest error
    assert list(seed_values(df, "metric.test/error", solver="dopri5")) == [0.1, 0.2]
