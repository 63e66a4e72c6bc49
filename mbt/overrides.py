"""Command-line overrides of frozen dataclass configs: `--model.fusion_layer=4`, `--optim.base_lr=0.1`.

Values are parsed by the field's annotated type (int, float, bool, None, tuples); a field that does not
exist is an error that lists the valid ones, raised before anything is built or compiled.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterable

from shards.format.errors import UserError


class OverrideError(UserError, ValueError):
    """An override names a field that doesn't exist or a value of the wrong type."""


def apply_overrides(config: Any, overrides: Iterable[str]) -> Any:
    """`config` with each "a.b.c=value" applied; nested dataclass fields are reached by dots."""
    for item in overrides:
        path, sep, text = item.removeprefix("--").partition("=")
        if not sep:
            raise OverrideError(f"override {item!r} is not of the form section.field=value")
        config = _set(config, path.strip().split("."), text.strip(), item)
    return config


def _set(obj: Any, path: list[str], text: str, item: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = path[0]
    if name not in fields:
        where = type(obj).__name__
        raise OverrideError(f"unknown field {name!r} of {where} in {item!r}; valid fields: {', '.join(fields)}")
    if len(path) > 1:
        return dataclasses.replace(obj, **{name: _set(getattr(obj, name), path[1:], text, item)})
    hint = typing.get_type_hints(type(obj))[name]
    try:
        value = parse_value(text, hint)
        return dataclasses.replace(obj, **{name: value})  # the config's own checks run here
    except ValueError as e:
        raise OverrideError(f"override {item!r}: {e}") from None


def parse_value(text: str, hint: Any) -> Any:
    """Parse `text` as a value of the annotated type `hint`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `int | None`
        if text.lower() == "none":
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return parse_value(text, a)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if typing.get_origin(hint) is tuple:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(parse_value(t, args[0]) for t in items)
        if len(items) != len(args):
            raise ValueError(f"{text!r}: expected {len(args)} comma-separated values")
        return tuple(parse_value(t, a) for t, a in zip(items, args))
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{text!r} is not a boolean (true/false)")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a valid {hint.__name__}") from None
    if hint is str or hint is typing.Any:
        return text
    raise ValueError(f"fields of type {hint} can't be set from the command line")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"width": 64}} -> {"model.width": 64}: config dicts compared field by field."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
