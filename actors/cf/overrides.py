"""``--set MODEL.FIELD=VALUE``: overrides of a CF model's config, checked against the config dataclass's
field types before anything runs."""

from __future__ import annotations

import ast
import types
import typing
from dataclasses import fields
from typing import Any, Literal

from actors.cf import MODELS


class OverrideError(ValueError):
    """A ``--set`` item that names no model or field, or whose value is not of the field's type."""


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["sasrec.epochs=20", "ease.lam=300"]`` -> ``{"sasrec": {"epochs": 20}, "ease": {"lam": 300.0}}``.

    Args:
        items: ``MODEL.FIELD=VALUE`` strings; a value is read as a Python literal where the field's type
            is not ``str`` (``20``, ``0.5``, ``true``, ``none``, ``[50, 100]``).

    Returns:
        Per model, the typed values of the fields it overrides.

    Raises:
        OverrideError: the item's shape, the model, the field or the value's type is wrong; the message
            names the item and what is allowed.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        model, dot, name = key.partition(".")
        if not sep or not dot:
            raise OverrideError(f"--set {item!r}: expected MODEL.FIELD=VALUE, e.g. sasrec.epochs=20")
        if model not in MODELS:
            raise OverrideError(f"--set {item!r}: no CF model {model!r}; models: {', '.join(sorted(MODELS))}")
        config = MODELS[model].Config
        known = {f.name for f in fields(config)}
        if name not in known:
            raise OverrideError(
                f"--set {item!r}: {model} has no field {name!r}; fields: {', '.join(sorted(known))}"
            )
        hint = typing.get_type_hints(config)[name]
        try:
            out.setdefault(model, {})[name] = typed_value(raw, hint)
        except ValueError as exc:
            raise OverrideError(f"--set {item!r}: {model}.{name} takes {type_name(hint)}; {exc}") from None
    return out


def typed_value(raw: str, hint: Any) -> Any:
    """``raw`` (command-line text) as a value of type ``hint``, or ValueError saying what it was."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw.strip().lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return typed_value(raw, arm)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"got {raw!r}")
    if origin is Literal:
        if raw in args:
            return raw
        raise ValueError(f"got {raw!r}")
    if hint is str:
        return raw
    value = _literal(raw)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif origin in (list, tuple) and isinstance(value, list | tuple):
        inner = args[0] if args else Any
        items = [v if inner is Any else typed_value(repr(v), inner) for v in value]
        return origin(items)
    elif hint is Any:
        return value
    raise ValueError(f"got {raw!r}")


def type_name(hint: Any) -> str:
    """``int``, ``float or None``, ``one of 'a', 'b'``: a field type as an error message says it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {type_name(args[0])}" if args else "a list"
    return getattr(hint, "__name__", str(hint))


def _literal(raw: str) -> Any:
    text = raw.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return raw


def add_set_argument(
    parser, help: str = "a CF model config field (repeatable), checked against its type"
) -> None:
    """The ``--set MODEL.FIELD=VALUE`` option every stage that trains or loads CF models takes."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="MODEL.FIELD=VALUE", help=help
    )
