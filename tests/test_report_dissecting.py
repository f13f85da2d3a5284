"""The Dissecting Neural ODEs report checked on data: verdicts on fabricated runs whose outcome is
known, the committed claims.json against scipy t intervals recomputed from the records, every
claim of massaroli2020.yaml accounted for, and the layout limits (summary, length, links)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from odelab.errors import ConfigError
from odelab.hydra_setup import repo_root
from odelab.reports import REPRODUCTIONS, load_sweeps
from odelab.reports.claims import Claim, load_claims, read_claims
from odelab.reports.dissecting import METRICS, _column

REPORTS = repo_root() / "experiments" / "reports"
RECORDS = REPORTS / "dissecting_cpu" / "records"


def _fabricate(sweep: Path, runs: list[tuple[list[str], dict[str, float]]]) -> None:
    """One job folder per (overrides, metrics), numbered in order."""
    for num, (overrides, metrics) in enumerate(runs):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (job / "metrics.json").write_text(json.dumps(metrics))


def _annuli(variant: str, accuracies: list[float]) -> list[tuple[list[str], dict[str, float]]]:
    return [
        ([f"model/variant={variant}", f"seed={s}"], {"test/acc": acc, "model/params": 100.0})
        for s, acc in enumerate(accuracies)
    ]


def _images(augment: str | None, accuracies: list[float]) -> list[tuple[list[str], dict]]:
    extra = [f"model.net.augment={augment}"] if augment else []
    params = {None: 10.0, "zero": 30.0, "higher_order": 20.0}.get(augment, 30.0)
    return [
        ([*extra, f"seed={s}"], {"test/acc": acc, "model/params": params})
        for s, acc in enumerate(accuracies)
    ]


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cpu budget of fabricated runs (sweep numbers as in conf/reproduce/dissecting.yaml:
    0 = 2D annuli, 2 = plain MNIST ODE-Net, 3 = augmented MNIST nets) and its verdicts."""
    root = tmp_path_factory.mktemp("dissecting")
    budget = root / "cpu"
    _fabricate(
        budget / "0",
        [
            *_annuli("vanilla", [0.90, 0.92, 0.91]),  # clearly below 99 %: fails, as claimed
            *_annuli("anode", [1.0, 1.0, 1.0]),  # clearly separates
            *_annuli("higher_order", [0.80, 0.82, 0.81]),  # clearly does not: contradicted
            *_annuli("data_control", [0.97, 1.0, 0.995]),  # straddles 99 %: within noise
        ],
    )
    _fabricate(budget / "2", _images(None, [0.50, 0.60, 0.55]))
    augmented = [
        *_images("zero", [0.50, 0.60, 0.55]),
        *_images("input_layer", [0.71, 0.80, 0.76]),
        *_images("higher_order", [0.50, 0.61, 0.55]),
    ]
    _fabricate(budget / "3", augmented)
    text = REPRODUCTIONS["dissecting"].build(load_sweeps(budget), "cpu", root / "out")
    verdicts = {v.claim: v for v in read_claims(root / "out" / "claims.json")}
    return {"verdicts": verdicts, "text": text}


def test_bounds_on_runs_whose_outcome_is_known(fabricated: dict) -> None:
    v = fabricated["verdicts"]
    assert v["annuli_vanilla_fails"].verdict == "reproduced"
    assert v["annuli_vanilla_fails"].mean == pytest.approx(91.0, rel=1e-5)
    assert v["annuli_anode_separates"].verdict == "reproduced"
    assert v["annuli_higher_order_separates"].verdict == "contradicted"
    assert v["annuli_data_control_separates"].verdict == "within noise"
    # No stacked runs and no 10D sweep in this budget: nothing to judge.
    assert v["annuli_stacked_separates"].verdict == "not testable here"
    assert v["annuli_10d_vanilla_fails"].verdict == "not testable here"


def test_contrasts_on_runs_whose_outcome_is_known(fabricated: dict) -> None:
    v = fabricated["verdicts"]
    il = v["images_mnist_input_layer_vs_zero"]
    assert il.verdict == "reproduced" and il.n == 3
    assert il.diff == pytest.approx(np.mean([21.0, 20.0, 21.0]), rel=1e-5)
    # A one-point edge on one seed out of three: no win.
    assert v["images_mnist_higher_order_vs_zero"].verdict == "within noise"
    # Parameters are fixed by the architecture: a constant saving is reproduced, interval [d, d].
    params = v["images_mnist_higher_order_fewer_params"]
    assert params.verdict == "reproduced" and params.low == params.high == pytest.approx(-10.0)
    # checks.yaml's ANODE-vs-NODE claim reads the plain sweep against zero augmentation.
    assert v["mnist_anode_vs_node"].verdict == "within noise"
    assert v["mnist_anode_vs_node"].diff == pytest.approx(0.0, abs=1e-9)
    assert v["mnist_node_accuracy"].verdict == "not testable here"


def _record_values() -> dict[tuple[str, str], dict[str, float]]:
    """(sweep tag, model) -> seed -> metrics, read from the committed records directly."""
    tags = yaml.safe_load((repo_root() / "conf/reproduce/dissecting.yaml").read_text())["cpu"][
        "tags"
    ]
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for path in sorted(RECORDS.glob("*/*/metrics.json")):
        sweep = int(path.parent.parent.name)
        overrides = dict(
            o.split("=", 1)
            for o in yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
            if "=" in o
        )
        augment = {"zero": "anode"}.get(overrides.get("model.net.augment"), None)
        model = (
            overrides.get("model/variant") or augment or overrides.get("model.net.augment", "node")
        )
        if tags[sweep] == "cnf":
            model = "data_control"
        out.setdefault((tags[sweep], model), {})[overrides["seed"]] = json.loads(path.read_text())
    return out


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def _expected(claim: Claim, low: float, high: float) -> str:
    edge = claim.threshold if claim.kind == "bound" else 0.0
    below = claim.direction == "lower"
    if (high < edge) if below else (low > edge):
        return "reproduced"
    if (low > edge) if below else (high < edge):
        return "contradicted"
    return "within noise"


KEYS = {"test accuracy": ("test/acc", 100.0), "learned horizon spread": ("test/horizon_std", 1.0)}
KEYS["parameters"] = ("model/params", 1.0)


def test_committed_verdicts_are_t_intervals_over_the_records() -> None:
    records = _record_values()
    committed = {v.claim: v for v in read_claims(REPORTS / "dissecting_cpu" / "claims.json")}
    checked = 0
    for claim in [
        *load_claims("massaroli2020").values(),
        load_claims("checks")["mnist_anode_vs_node"],
    ]:
        if "cpu" not in claim.budgets:
            assert committed[claim.id].verdict == "not testable here", claim.id
            assert committed[claim.id].reason, claim.id
            continue
        key, scale = KEYS[claim.metric]
        arms = [records[(claim.section, arm)] for arm in claim.arms]
        seeds = sorted(set.intersection(*(set(a) for a in arms)))
        values = [np.array([scale * a[s][key] for s in seeds]) for a in arms]
        diff = values[0] - values[1] if claim.kind == "contrast" else values[0]
        low, high = _t_interval(diff)
        verdict = committed[claim.id]
        assert verdict.low == pytest.approx(low, rel=1e-5, abs=1e-6), claim.id
        assert verdict.high == pytest.approx(high, rel=1e-5, abs=1e-6), claim.id
        assert verdict.verdict == _expected(claim, low, high), claim.id
        checked += 1
    assert checked == 21
    # The vanilla NODE's verdict is the mean of its seeds' records (which seeds separate varies
    # from one machine's rerun to the next: the 10-seed budget counts them).
    vanilla = records[("annuli_2d", "vanilla")]
    mean = 100 * np.mean([m["test/acc"] for m in vanilla.values()])
    assert committed["annuli_vanilla_fails"].mean == pytest.approx(mean, rel=1e-5)


def test_every_claim_is_in_claims_json_and_untested_ones_say_why() -> None:
    committed = {v.claim: v for v in read_claims(REPORTS / "dissecting_cpu" / "claims.json")}
    claims = load_claims("massaroli2020")
    assert set(claims) <= set(committed)
    for claim in claims.values():
        if claim.budgets:  # a testable claim's metric has a frame column
            assert claim.metric in METRICS, claim.id
        else:
            assert claim.reason and committed[claim.id].reason == claim.reason, claim.id
    assert claims["annuli_ten_seeds"].study == "issue 41: 10 seeds"


def test_an_unknown_metric_is_a_config_error_naming_the_claim() -> None:
    claim = Claim(id="x", paper="p", text="t", source="s", metric="test F1", kind="value")
    with pytest.raises(ConfigError, match="claim x: metric 'test F1'"):
        _column(claim)


def test_committed_report_shows_one_figure_in_its_headline() -> None:
    lines = (REPORTS / "dissecting_cpu.md").read_text().splitlines()
    summary = lines[: next(i for i, line in enumerate(lines) if line.startswith("## "))]
    assert summary[2].startswith("| Claim | Paper |")
    assert sum(line.startswith("![") for line in summary) == 1


def test_quick_budget_judges_only_its_claims(tmp_path: Path) -> None:
    # quick's sweeps: 0 = annuli (3 variants), 1 = plain MNIST ODE-Net, 2 = augmented nets.
    _fabricate(tmp_path / "quick" / "0", _annuli("vanilla", [0.6, 0.7, 0.65]))
    _fabricate(tmp_path / "quick" / "1", _images(None, [0.3]))
    REPRODUCTIONS["dissecting"].build(load_sweeps(tmp_path / "quick"), "quick", tmp_path / "out")
    verdicts = {v.claim: v for v in read_claims(tmp_path / "out" / "claims.json")}
    assert verdicts["annuli_vanilla_fails"].verdict == "reproduced"
    assert verdicts["annuli_anode_separates"].reason == "no finished runs with this metric"
    stacked = verdicts["annuli_stacked_separates"]
    assert (
        stacked.verdict == "not testable here"
        and stacked.reason == "budgets testing it: `cpu`, `seeds10`"
    )
