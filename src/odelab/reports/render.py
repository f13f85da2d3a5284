"""Jinja2 rendering of report templates (`src/odelab/reports/templates/*.md.j2`).

`render("spiral.md.j2", verdicts=verdicts, rows=rows)`; in a template the shared macros come
from `{% import "_macros.md.j2" as m %}` and numbers are formatted by the filters `pm`, `ci`,
`pct` and `num` (`{{ mean | pm(std, ".2f") }}`). The environment is strict (an undefined name
is an error), keeps the trailing newline and trims block tags, so a template's output is the
markdown byte for byte. Every number comes computed from the caller.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def pm(mean: float | None, std: float | None = None, spec: str = ".3g") -> str:
    """`mean ± std` ("0.42 ± 0.03"); the mean alone without a std; "n/a" without a mean."""
    if _missing(mean):
        return "n/a"
    return f"{mean:{spec}}" if _missing(std) else f"{mean:{spec}} ± {std:{spec}}"


def ci(low: float | None, high: float | None, spec: str = ".3g") -> str:
    """A 95 % interval as "[low, high]"; "n/a" when either end is missing."""
    return "n/a" if _missing(low) or _missing(high) else f"[{low:{spec}}, {high:{spec}}]"


def pct(value: float | None, spec: str = ".1f") -> str:
    """A fraction as a percentage ("12.3 %"); "n/a" when missing."""
    return "n/a" if _missing(value) else f"{100 * value:{spec}} %"


def num(value: Any, spec: str = ".3g") -> str:
    """A number with `spec`, a list of numbers joined by " / ", "—" for None, text unchanged."""
    if isinstance(value, list | tuple):
        return " / ".join(num(v, spec) for v in value)
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return "n/a" if not math.isfinite(value) else f"{value:{spec}}"


@cache
def environment() -> jinja2.Environment:
    """The one Jinja2 environment over the templates folder."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # markdown, not HTML
    )
    env.filters.update(pm=pm, ci=ci, pct=pct, num=num)
    return env


def render(template_name: str, **context: Any) -> str:
    """The template `templates/<template_name>` rendered with `context`."""
    return environment().get_template(template_name).render(**context)


def render_string(source: str, **context: Any) -> str:
    """A template given as a string (e.g. an answer template from a YAML file)."""
    return environment().from_string(source).render(**context)
