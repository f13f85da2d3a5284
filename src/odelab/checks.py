"""Argument checks for constructors: each one states what it accepts, next to its arguments.

A constructor calls `check_args(prefix, rules, values)` with the config key it is built
from (`data`, `solver`, ...) and one `Check` per argument; the first value a check refuses
raises a `ConfigError` that names the key, the value and what is accepted, e.g.

    data.batch_size=0 is invalid: expected an integer >= 1

An object Hydra builds at a deeper key can pass `prefix=""`: `odelab.train.build` puts the
full key of the node in front of the argument's name.
"""

from __future__ import annotations

import collections.abc
import inspect
import itertools
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from odelab.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """A predicate on one value and the words that describe what it accepts."""

    accepts: Callable[[Any], bool]
    expected: str

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.accepts(value))
        except (TypeError, ValueError):
            return False


class ArgumentError(ConfigError):
    """A refused constructor argument; `name` is its key relative to the object's node."""

    def __init__(self, name: str, value: Any, expected: str):
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"{name}={show(value)} is invalid: expected {expected}")

    def at(self, prefix: str) -> ConfigError:
        """The same refusal under the full key `<prefix>.<name>`."""
        return ArgumentError(f"{prefix}.{self.name}" if prefix else self.name, self.value,
                             self.expected)  # fmt: skip


def show(value: Any) -> str:
    """A value as a user would type it in an override."""
    if isinstance(value, str):
        # An interpolation can multiply a typo (`${mul:ten,2}`): show its start only.
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return str(list(value))
    return str(value)


def check_args(prefix: str, rules: Mapping[str, Check], values: Mapping[str, Any]) -> None:
    """Raise `ArgumentError` for the first of `values` that its rule in `rules` refuses."""
    for name, rule in rules.items():
        if name in values and not rule(_plain(values[name])):
            raise ArgumentError(name, _plain(values[name]), rule.expected).at(prefix)


def _plain(value: Any) -> Any:
    # Hydra hands list arguments over as ListConfig (or tuples from dataclass defaults).
    if isinstance(value, (tuple, list)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def _inside(v: float, low: float | None, high: float | None, lo_open: bool, hi_open: bool) -> bool:
    if low is not None and (v <= low if lo_open else v < low):
        return False
    return not (high is not None and (v >= high if hi_open else v > high))


def _nullable(check: Check, nullable: bool) -> Check:
    if not nullable:
        return check
    return Check(lambda v: v is None or check.accepts(v), f"{check.expected} or null")


def integer(
    low: int | None = None, high: int | None = None, nullable: bool = False, note: str = ""
) -> Check:
    """An int (not a bool) in [low, high]."""
    bounds = _bounds(low, high, False, False)
    words = "an integer" + (f" {bounds}" if bounds else "") + (f" ({note})" if note else "")
    check = Check(lambda v: _is_int(v) and _inside(v, low, high, False, False), words)
    return _nullable(check, nullable)


def number(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    nullable: bool = False,
) -> Check:
    """A finite int or float between the bounds (open or closed)."""
    bounds = _bounds(low, high, low_open, high_open)
    words = "a finite number" + (f" {bounds}" if bounds else "")
    check = Check(lambda v: _is_number(v) and _inside(v, low, high, low_open, high_open), words)
    return _nullable(check, nullable)


def positive(nullable: bool = False) -> Check:
    return number(0, low_open=True, nullable=nullable)


def fraction(high_open: bool = False) -> Check:
    return number(0, 1, high_open=high_open)


def boolean(nullable: bool = False) -> Check:
    return _nullable(Check(lambda v: isinstance(v, bool), "true or false"), nullable)


def choice(*options: Any, nullable: bool = False) -> Check:
    shown = ", ".join(str(o) for o in options)
    check = Check(lambda v: v in options and not isinstance(v, bool), f"one of {shown}")
    return _nullable(check, nullable)


def text(nullable: bool = False) -> Check:
    check = Check(lambda v: isinstance(v, str) and v != "", "a non-empty string")
    return _nullable(check, nullable)


def numbers(low: float | None = None, min_len: int = 0) -> Check:
    """A list of at least `min_len` finite numbers >= low."""
    bounds = _bounds(low, None, False, False)
    least = f"at least {min_len} " if min_len else ""
    return Check(
        lambda v: (
            isinstance(v, list)
            and len(v) >= min_len
            and all(_is_number(x) and _inside(x, low, None, False, False) for x in v)
        ),
        f"a list of {least}numbers" + (f" {bounds}" if bounds else ""),
    )


def increasing_ints() -> Check:
    return Check(
        lambda v: (
            isinstance(v, list)
            and all(_is_int(x) and x >= 0 for x in v)
            and all(a < b for a, b in itertools.pairwise(v))
        ),
        "a strictly increasing list of integers >= 0",
    )


# --- the types a constructor's signature declares --------------------------------


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether a plain config value can stand for `annotation`; unknown types pass."""
    if annotation is Any or annotation is inspect.Parameter.empty or value is None:
        return True  # null's meaning is the constructor's to judge
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_accepts(a, value) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if annotation is type(None):  # the None arm of an Optional admits nothing else
        return False
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) and not isinstance(value, str):
        if not isinstance(value, list):
            return False
        inner = args[0] if args and (origin is not tuple or args[-1] is Ellipsis) else Any
        return all(_accepts(inner, v) for v in value)
    return True  # a class, a callable, a mapping: built or judged elsewhere


def _words(annotation: Any) -> str:
    """An annotation in the words of the error message (`int | None`: an integer or null)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        words = [_words(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence) and args:
        return f"a list of ({_words(args[0])})"
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return simple.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _parameters(target: Callable[..., Any]) -> dict[str, Any]:
    """Parameter name -> evaluated annotation; one that cannot be evaluated is left out.

    A class whose `__init__` passes `**kwargs` on to its bases also answers for the named
    parameters of those bases (a task's `scheduler_interval` is `OdelabTask`'s).
    """
    owners = (
        [c for c in target.__mro__ if "__init__" in vars(c)] if isinstance(target, type) else []
    )
    out: dict[str, Any] = {}
    for owner in owners or [target]:
        function = vars(owner)["__init__"] if owners else target
        try:
            params = inspect.signature(function).parameters
        except (TypeError, ValueError):
            break
        # A decorated __init__ (Lightning's Trainer) keeps its annotations' names in the
        # module of the function it wraps.
        module = sys.modules.get(getattr(inspect.unwrap(function), "__module__", ""), None)
        scope = dict(vars(module)) if module else {}
        for name, param in params.items():
            if (
                name in out
                or name == "self"
                or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
            ):
                continue
            annotation = param.annotation
            if isinstance(annotation, str):  # `from __future__ import annotations`
                try:
                    annotation = eval(annotation, scope)  # noqa: S307 - the module's own text
                except Exception:  # noqa: BLE001 - a name only imported for type checking
                    continue
            out[name] = annotation
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return out


def check_types(node: Mapping[str, Any], key: str) -> None:
    """Every argument of every `_target_` under `node` (a resolved plain mapping) against the
    type its constructor's signature declares; raises `ArgumentError` at the argument's key."""
    from hydra.utils import get_method

    target = node.get("_target_")
    params: dict[str, Any] = {}
    if isinstance(target, str):
        try:
            params = _parameters(get_method(target))
        except Exception:  # noqa: BLE001 - an unknown target is Hydra's to report
            params = {}
    for name, value in node.items():
        where = f"{key}.{name}" if key else name
        if isinstance(value, Mapping):
            check_types(value, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    check_types(item, f"{where}[{i}]")
        if name in params and not _accepts(params[name], value):
            raise ArgumentError(where, value, _words(params[name]))
