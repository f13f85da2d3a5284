"""Reproduction reports, one per paper result: `make reproduce-<name> budget=quick|paper`.

To add one, write a module here that defines a `Reproduction` and list it in
`REPRODUCTIONS` (see `spiral.py`).
"""

from __future__ import annotations

from odelab.reports.base import JobResult, Reproduction, load_jobs
from odelab.reports.spiral import SPIRAL

REPRODUCTIONS: dict[str, Reproduction] = {r.name: r for r in (SPIRAL,)}

__all__ = ["REPRODUCTIONS", "JobResult", "Reproduction", "load_jobs"]
