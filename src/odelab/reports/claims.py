"""Paper claims as data (`conf/claims/<paper>.yaml`, keyed like the fields of `Claim`) and the
verdicts a report computes for them: `evaluate(claim, a, b)` for a contrast of per-seed values
of arms a and b, `evaluate(claim, a)` for a value or bound, `not_testable(claim, why)`, all
written by `write_claims(report_dir / "claims.json", verdicts)`. A claim's `kind`:

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

import yaml

from odelab.errors import ConfigError
from odelab.hydra_setup import CONFIG_DIR
from odelab.reports.stats import compare
from odelab.tables import mean_std

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
    # Budgets among `budgets` whose setup is the authors' on the factor that decides the claim
    # (e.g. the baseline trained as their code trains it): the scorecard prefers their verdict.
    authors_setup: tuple[str, ...] = ()
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
_CHOICES = {"kind": KINDS, "direction": ("higher", "lower", None), "expect": ("better", "equal")}


def _claim(raw: Any, paper: str, where: str) -> Claim:
    """One YAML entry as a Claim, with a one-line error naming the file, the claim and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each entry of `claims` must be a mapping, got {raw!r}")
    where = f"{where}: claim {raw.get('id', '?')}"
    unknown, missing = sorted(set(raw) - _FIELDS), sorted(_REQUIRED - set(raw))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {sorted(_FIELDS)})")
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    for key, choices in _CHOICES.items():
        value = raw.get(key, Claim.__dataclass_fields__[key].default)
        if value not in choices:
            raise ConfigError(f"{where}: {key} must be one of {choices}, got {value!r}")
    if raw["kind"] == "contrast" and len(raw.get("arms", ())) != 2:
        raise ConfigError(f"{where}: a contrast needs `arms: [a, b]`")
    tuples = {
        key: tuple(str(v) for v in raw.get(key) or ())
        for key in ("arms", "budgets", "authors_setup")
    }
    if stray := sorted(set(tuples["authors_setup"]) - set(tuples["budgets"])):
        raise ConfigError(
            f"{where}: authors_setup budget {stray[0]!r} is not in `budgets`; add it there"
        )
    return Claim(**{**raw, "paper": paper, **tuples})


def load_claims(paper: str, claims_dir: Path = CLAIMS_DIR) -> dict[str, Claim]:
    """The claims of `conf/claims/<paper>.yaml` by id, in file order.

    Raises:
        ConfigError: the file is absent, a key is unknown or missing, or an id repeats.
    """
    path = claims_dir / f"{paper}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in claims_dir.glob("*.yaml"))
        raise ConfigError(f"no claims file {path}; known papers: {known}")
    out: dict[str, Claim] = {}
    for raw in (yaml.safe_load(path.read_text()) or {}).get("claims") or []:
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


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _mean_std(values: Sequence[float | None] | None) -> tuple[float | None, float | None]:
    xs = [] if values is None else [v for v in values if _finite(v) is not None]
    mean, std = mean_std(xs)
    return (mean, std if len(xs) > 1 else None) if xs else (None, None)


def _decide(claim: Claim, low: float, high: float) -> str:
    """The verdict from the interval [low, high], turned so that lower is the claim's side."""
    if claim.kind == "bound":
        target = claim.threshold if claim.threshold is not None else claim.paper_value
        need = "a bound needs a numeric threshold or paper_value"
    else:
        target = 0.0 if claim.kind == "contrast" else claim.paper_value
        target = target[0] if isinstance(target, list) else target
        need = "a value claim needs a numeric paper_value"
    if not isinstance(target, int | float):
        raise ConfigError(f"claim {claim.id}: {need}")
    if claim.direction != "lower":  # an equality is symmetric: turning it changes nothing
        low, high, target = -high, -low, -target
    lo, hi, m = low - float(target), high - float(target), claim.margin
    if claim.kind == "bound" or (claim.kind == "contrast" and claim.expect == "better"):
        # The interval wholly on the claim's side of the edge, wholly on the other, or across.
        good, bad = hi < 0, lo > 0
    elif claim.kind == "value" and claim.direction is not None:
        good, bad = hi <= m, lo > m  # a shortfall against the paper up to `margin` is allowed
    else:  # an equality (contrast expect: equal, value with no direction): within `margin`
        good, bad = -m <= lo and hi <= m, hi < -m or lo > m
    return "reproduced" if good else "contradicted" if bad else "within noise"


def _verdict(claim: Claim, **values: Any) -> Verdict:
    where = {"report": claim.report, "section": claim.section, "unit": claim.unit}
    return Verdict(claim=claim.id, paper_value=claim.paper_value, **where, **values)


def evaluate(
    claim: Claim, a: Sequence[float | None], b: Sequence[float | None] | None = None
) -> Verdict:
    """The verdict of `claim` from per-seed values of arm a (or of the measured quantity) and,
    for a contrast, of arm b (in the same seed order when paired); None/NaN are dropped, and
    no finite value is "not testable here"."""
    if (claim.kind == "contrast") != (b is not None):
        raise ValueError(f"claim {claim.id}: a contrast takes a and b, a {claim.kind} only a")
    # A value or bound is the interval of a against 0, paired.
    c = compare(
        list(a),
        [0.0] * len(a) if b is None else list(b),
        a_name=claim.arms[0] if b is not None else "ours",
        b_name=claim.arms[1] if b is not None else "0",
        metric=claim.metric,
        higher_is_better=claim.direction == "higher",
        paired=b is None or (claim.paired and len(a) == len(b)),
    )
    n, mean, low, high = c.n, c.mean_diff, c.low, c.high
    if n == 0:
        return not_testable(claim, "no finished runs with this metric")
    if n == 1:
        low = high = mean
        reason = f"a single run {'pair' if b is not None else ''}: no interval"
    else:
        kind = "runs" if b is None else "paired" if claim.paired else "per side"
        reason = f"95 % interval [{low:.3g}, {high:.3g}], n = {n} {kind}"
    if claim.kind == "value" or (claim.kind == "contrast" and claim.expect == "equal"):
        reason += f", margin {claim.margin:g}"
    (a_mean, a_std), (b_mean, b_std) = _mean_std(a), _mean_std(b)
    return _verdict(
        claim,
        mean=a_mean,
        std=a_std,
        n=n,
        low=_finite(low),
        high=_finite(high),
        verdict=_decide(claim, low, high),
        reason=reason,
        mean_b=b_mean,
        std_b=b_std,
        diff=_finite(mean) if b is not None else None,
    )


def not_testable(claim: Claim, reason: str) -> Verdict:
    """A claim this report cannot test, with why (e.g. "needs the 60k MNIST training set")."""
    none = dict.fromkeys(("mean", "std", "low", "high"))
    return _verdict(claim, **none, n=0, verdict="not testable here", reason=reason)


def _round(value: Any) -> Any:
    """Floats to 6 significant digits so the file does not churn on the last bit."""
    if isinstance(value, list):
        return [_round(v) for v in value]
    return float(f"{value:.6g}") if isinstance(value, float) else value


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
