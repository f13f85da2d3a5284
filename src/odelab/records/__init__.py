"""The typed schemas of the JSON benchmark and check records: the contract between the scripts
that write them (`experiments/`) and the reports that read them (`odelab.reports`, through
`odelab.reports.records.load_record`). One module per topic; pure declarations that import
nothing of `odelab.reports`."""

from __future__ import annotations

import sys
from dataclasses import Field, field, make_dataclass
from typing import Any


def schema(name: str, doc: str, *groups: tuple[Any, ...], **fields: Any) -> type:
    """A record dataclass, its fields in order: each group `(type, "space separated names")` or
    `(type, "names", default)`, then each keyword as its type or `(type, default)`. A default
    may be a `dataclasses.field(...)` (for a `default_factory`)."""
    spec = [(n, kind, *rest) for kind, names, *rest in groups for n in names.split()]
    spec += [(k, *t) if isinstance(t, tuple) else (k, t) for k, t in fields.items()]
    spec = [
        (n, kind, *(d if isinstance(d, Field) else field(default=d) for d in rest))
        for n, kind, *rest in spec
    ]
    module = sys._getframe(1).f_globals["__name__"]  # the declaring module, as for a class
    return make_dataclass(name, spec, namespace={"__doc__": doc, "__module__": module})
