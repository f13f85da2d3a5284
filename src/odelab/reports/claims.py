"""Paper claims as data (`conf/claims/<paper>.yaml`) and the verdicts a report computes for them.

Usage::

    from odelab.reports.claims import evaluate, load_claims, not_testable, write_claims

    claims = load_claims("chen2018")
    verdicts = [
        evaluate(claims["mnist_odenet_vs_resnet"], ode_errors, resnet_errors),  # contrast
        evaluate(claims["mnist_odenet_error"], ode_errors),                     # value / bound
        not_testable(claims["mnist_60k"], "needs the 60k MNIST training set"),
    ]
    write_claims(report_dir / "claims.json", verdicts)

A claim's `kind` says what is tested (see conf/claims/README.md for the YAML schema):

- `contrast`: arm a against arm b (the difference `a - b`, paired per seed when `paired`).
  With `expect: better` (the default) the paper says a beats b on `direction`; with
  `expect: equal` it says they match within `margin`.
- `value`: ours against the paper's number; "reproduced" when we are no worse than the paper by
  more than `margin` (on `direction`; two-sided when `direction` is null).
- `bound`: ours below (`direction: lower`) or above (`higher`) `threshold` (default: the
  paper value).

The verdict comes from the 95 % interval (`reports.stats.compare`): the interval wholly on the
claim's side gives "reproduced", wholly on the other side "contradicted", straddling the edge
"within noise". A single run has no interval: its point value decides and the reason says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from odelab.errors import ConfigError
from odelab.hydra_setup import CONFIG_DIR
from odelab.reports.stats import compare

VERDICTS = ("reproduced", "within noise", "contradicted", "not testable here")
KINDS = ("contrast", "value", "bound")
CLAIMS_DIR = Path(CONFIG_DIR) / "claims"


@dataclass(frozen=True)
class Claim:
    """One sentence of a paper, with what a report must measure to test it."""

    id: str
    paper: str
    text: str
    source: str
    metric: str
    kind: str
    paper_value: float | list[float] | None = None
    unit: str = ""
    arms: tuple[str, ...] = ()
    paired: bool = True
    direction: str | None = "lower"
    margin: float = 0.0
    budgets: tuple[str, ...] = ()
    report: str | None = None
    section: str | None = None
    expect: str = "better"
    threshold: float | None = None
    reason: str = ""  # why it is not testable here when no report tests it (scorecard)
    study: str | None = None  # the issue whose study will test it, when none does yet


@dataclass
class Verdict:
    """A claim's outcome in one report, written to that report's `claims.json`.

    `mean`/`std` are over arm a (the value for `value`/`bound`); `mean_b`/`std_b` over arm b of a
    contrast; `diff`, `low`, `high` the mean and 95 % interval of `a - b` (contrast) or of our
    value (value/bound); `n` the pairs or runs per side.
    """

    claim: str
    paper_value: float | list[float] | None
    mean: float | None
    std: float | None
    n: int
    low: float | None
    high: float | None
    verdict: str
    reason: str
    report: str | None
    section: str | None
    unit: str = ""
    mean_b: float | None = None
    std_b: float | None = None
    diff: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


_FIELDS = {f.name for f in fields(Claim)}
_REQUIRED = {"id", "text", "source", "metric", "kind"}


def _claim(raw: dict[str, Any], paper: str, where: str) -> Claim:
    """One YAML entry as a Claim, with a one-line error naming the file, the claim and the key."""
    name = raw.get("id", "?") if isinstance(raw, dict) else "?"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each entry of `claims` must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: claim {name}: unknown key {unknown[0]!r} (known: {sorted(_FIELDS)})"
        )
    missing = sorted(_REQUIRED - set(raw))
    if missing:
        raise ConfigError(f"{where}: claim {name}: missing key {missing[0]!r}")
    if raw["kind"] not in KINDS:
        raise ConfigError(
            f"{where}: claim {name}: kind must be one of {KINDS}, got {raw['kind']!r}"
        )
    if raw.get("direction", "lower") not in ("higher", "lower", None):
        raise ConfigError(f"{where}: claim {name}: direction must be higher, lower or null")
    if raw.get("expect", "better") not in ("better", "equal"):
        raise ConfigError(f"{where}: claim {name}: expect must be better or equal")
    if raw["kind"] == "contrast" and len(raw.get("arms", ())) != 2:
        raise ConfigError(f"{where}: claim {name}: a contrast needs `arms: [a, b]`")
    values = {**raw, "paper": paper}
    for key in ("arms", "budgets"):
        values[key] = tuple(str(v) for v in raw.get(key) or ())
    return Claim(**values)


def load_claims(paper: str, claims_dir: Path = CLAIMS_DIR) -> dict[str, Claim]:
    """The claims of `conf/claims/<paper>.yaml` by id, in file order.

    Raises:
        ConfigError: the file is absent, a key is unknown or missing, or an id repeats.
    """
    path = claims_dir / f"{paper}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in claims_dir.glob("*.yaml"))
        raise ConfigError(f"no claims file {path}; known papers: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    out: dict[str, Claim] = {}
    for raw in data.get("claims") or []:
        claim = _claim(raw, paper, str(path))
        if claim.id in out:
            raise ConfigError(f"{path}: claim id {claim.id!r} appears twice")
        out[claim.id] = claim
    return out


def paper_settings(paper: str, report: str, claims_dir: Path = CLAIMS_DIR) -> dict[str, str]:
    """The paper's recipe for `report` (`settings.<report>` of `conf/claims/<paper>.yaml`):
    setting -> the paper's value, the "Paper" column of a report's `differs` table.

    Raises:
        ConfigError: the file has no such block.
    """
    path = claims_dir / f"{paper}.yaml"
    settings = (yaml.safe_load(path.read_text()) or {}).get("settings") or {}
    if report not in settings:
        raise ConfigError(f"{path}: no `settings.{report}` block (known: {sorted(settings)})")
    return {str(k): str(v) for k, v in settings[report].items()}


def all_claims(claims_dir: Path = CLAIMS_DIR) -> dict[str, dict[str, Claim]]:
    """Every paper's claims (`paper -> id -> Claim`), papers in file-name order."""
    papers = sorted(p.stem for p in claims_dir.glob("*.yaml") if p.stem != "questions")
    return {paper: load_claims(paper, claims_dir) for paper in papers}


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _stats(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    xs = _clean(values)
    if not xs:
        return None, None
    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else None)


def _side(low: float, high: float, edge: float, want_below: bool) -> str:
    """Reproduced when the interval lies wholly on the wanted side of `edge`, contradicted when
    wholly on the other, within noise when it straddles it."""
    if want_below:
        return "reproduced" if high < edge else "contradicted" if low > edge else "within noise"
    return "reproduced" if low > edge else "contradicted" if high < edge else "within noise"


def _interval(claim: Claim, a: Sequence[float | None], b: Sequence[float | None] | None):
    """(n, mean difference or value, low, high), the interval from `stats.compare`."""
    if b is None:
        xs = _clean(a)
        if len(xs) < 2:
            mean = xs[0] if xs else math.nan
            return len(xs), mean, mean, mean
        ref = [0.0] * len(xs)
        c = compare(
            xs,
            ref,
            a_name="ours",
            b_name="0",
            metric=claim.metric,
            higher_is_better=claim.direction == "higher",
            paired=True,
        )
        return c.n, c.mean_diff, c.low, c.high
    paired = claim.paired and len(a) == len(b)
    c = compare(
        list(a),
        list(b),
        a_name=claim.arms[0],
        b_name=claim.arms[1],
        metric=claim.metric,
        higher_is_better=claim.direction == "higher",
        paired=paired,
    )
    if c.n == 1:
        return 1, c.mean_diff, c.mean_diff, c.mean_diff
    return c.n, c.mean_diff, c.low, c.high


def _decide(claim: Claim, mean: float, low: float, high: float) -> str:
    lower_better = claim.direction == "lower"
    if claim.kind == "contrast" and claim.expect == "better":
        return _side(low, high, 0.0, want_below=lower_better)
    if claim.kind == "bound":
        edge = claim.threshold if claim.threshold is not None else claim.paper_value
        if not isinstance(edge, int | float):
            raise ConfigError(f"claim {claim.id}: a bound needs a numeric threshold or paper_value")
        return _side(low, high, float(edge), want_below=lower_better)
    # An equality (contrast expect: equal, or value): the distance from the target in units
    # of `margin`; for a value with a direction, doing better than the paper is no shortfall.
    target = 0.0 if claim.kind == "contrast" else claim.paper_value
    if isinstance(target, list):
        target = target[0]
    if not isinstance(target, int | float):
        raise ConfigError(f"claim {claim.id}: a value claim needs a numeric paper_value")
    lo, hi = low - float(target), high - float(target)
    if claim.kind == "value" and claim.direction is not None:
        # The shortfall (how much worse than the paper) is allowed up to `margin`.
        short_lo, short_hi = (lo, hi) if lower_better else (-hi, -lo)
        if short_hi <= claim.margin:
            return "reproduced"
        return "contradicted" if short_lo > claim.margin else "within noise"
    if -claim.margin <= lo and hi <= claim.margin:
        return "reproduced"
    if hi < -claim.margin or lo > claim.margin:
        return "contradicted"
    return "within noise"


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def evaluate(
    claim: Claim, a: Sequence[float | None], b: Sequence[float | None] | None = None
) -> Verdict:
    """The verdict of `claim` from per-seed values of arm a (and arm b for a contrast).

    Args:
        claim: the claim (its kind, direction, margin and pairing decide the test).
        a: per-seed values of arm a (or of the measured quantity); None/NaN are dropped.
        b: per-seed values of arm b, in the same seed order as `a` when paired.

    Returns:
        The Verdict; "not testable here" when no value is finite.
    """
    if (claim.kind == "contrast") != (b is not None):
        raise ValueError(f"claim {claim.id}: a contrast takes a and b, a {claim.kind} only a")
    n, mean, low, high = _interval(claim, a, b)
    if n == 0:
        return not_testable(claim, "no finished runs with this metric")
    verdict = _decide(claim, mean, low, high)
    kind = "paired" if claim.paired and b is not None else "per side" if b is not None else "runs"
    reason = f"95 % interval [{low:.3g}, {high:.3g}], n = {n} {kind}"
    if n == 1:
        reason = f"a single run {'pair' if b is not None else ''}: no interval".replace("  ", " ")
    if claim.kind == "value" or (claim.kind == "contrast" and claim.expect == "equal"):
        reason += f", margin {claim.margin:g}"
    a_mean, a_std = _stats(a)
    b_mean, b_std = _stats(b) if b is not None else (None, None)
    return Verdict(
        claim=claim.id,
        paper_value=claim.paper_value,
        mean=a_mean,
        std=a_std,
        n=n,
        low=_finite_or_none(low),
        high=_finite_or_none(high),
        verdict=verdict,
        reason=reason,
        report=claim.report,
        section=claim.section,
        unit=claim.unit,
        mean_b=b_mean,
        std_b=b_std,
        diff=_finite_or_none(mean) if b is not None else None,
    )


def not_testable(claim: Claim, reason: str) -> Verdict:
    """A claim this report cannot test, with why (e.g. "needs the 60k MNIST training set")."""
    return Verdict(
        claim=claim.id,
        paper_value=claim.paper_value,
        mean=None,
        std=None,
        n=0,
        low=None,
        high=None,
        verdict="not testable here",
        reason=reason,
        report=claim.report,
        section=claim.section,
        unit=claim.unit,
    )


def _round(value: Any) -> Any:
    """Floats to 6 significant digits so the file does not churn on the last bit."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def write_claims(path: Path, verdicts: Sequence[Verdict]) -> None:
    """Write the verdicts as a JSON list (field order fixed, floats rounded, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{k: _round(v) for k, v in asdict(v).items()} for v in verdicts]
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")


def read_claims(path: Path) -> list[Verdict]:
    """The verdicts a report wrote (`write_claims`)."""
    from odelab.reports.records import load_record

    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: claims.json must hold a JSON list of verdicts")
    return [load_record(path, Verdict, data=row) for row in raw]
