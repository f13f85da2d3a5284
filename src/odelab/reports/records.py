"""Load a JSON benchmark/check record into its schema dataclass, with a one-line error.

Every record kind has one dataclass (`record = load_record(bench_dir / "speed.json",
SpeedRecord)`); loading checks that each required field is present, no unknown field is there,
and each value has the declared type (int, float, str, bool, list, tuple, dict, a nested
dataclass, or `X | None`), raising `RecordError` such as
"experiments/.../speed.json: field 'seconds': expected list, got str".
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from odelab.errors import ConfigError

T = TypeVar("T")


class RecordError(ConfigError):
    """A JSON record does not match its schema; the message names the file and the field."""


def _check(value: Any, hint: Any, where: str, name: str) -> Any:
    """`value` checked (and nested dataclasses built) against the type `hint`."""
    got = type(value).__name__
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        errors = []
        for option in options:
            try:
                return _check(value, option, where, name)
            except RecordError as err:
                errors.append(str(err))
        many = f"{where}: field {name!r}: {got} matches none of {hint}"
        raise RecordError(errors[0] if len(errors) == 1 else many)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise RecordError(f"{where}: field {name!r}: expected an object, got {got}")
        return _build(value, hint, where, f"{name}.")
    base = origin or hint
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON writes 2.0 as 2
    if base in (tuple, list) and isinstance(value, list):
        item = (typing.get_args(hint) or (Any,))[0]
        items = [_check(v, item, where, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if base is tuple else items
    if base is dict and isinstance(value, dict):
        return value
    if isinstance(base, type) and isinstance(value, base):
        if not (base is int and isinstance(value, bool)):
            return value
    expected = getattr(base, "__name__", str(base))
    raise RecordError(f"{where}: field {name!r}: expected {expected}, got {got}")


def _build(data: dict[str, Any], schema: type[T], where: str, prefix: str = "") -> T:
    hints, missing = typing.get_type_hints(schema), dataclasses.MISSING
    known = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecordError(
            f"{where}: field {prefix}{unknown[0]!r}: unknown to {schema.__name__} "
            f"(known: {sorted(known)})"
        )
    for name, f in known.items():
        if name not in data and f.default is missing and f.default_factory is missing:
            raise RecordError(
                f"{where}: field {prefix}{name!r}: missing (required by {schema.__name__})"
            )
    return schema(**{k: _check(v, hints[k], where, prefix + k) for k, v in data.items()})


def load_record(path: str | Path, schema: type[T], *, data: Any = None) -> T:
    """The record at `path` as an instance of the dataclass `schema`.

    Args:
        path: the JSON file (named in errors).
        schema: the dataclass the record must match.
        data: an already parsed object to validate instead of reading `path` (e.g. one entry
            of a JSON list).

    Raises:
        RecordError: the file is absent or not JSON, or a field is missing, unknown or mistyped.
    """
    where = str(path)
    if data is None:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise RecordError(f"{where}: no such record") from None
        except json.JSONDecodeError as err:
            raise RecordError(f"{where}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise RecordError(
            f"{where}: expected a JSON object for {schema.__name__}, got {type(data).__name__}"
        )
    return _build(data, schema, where)
