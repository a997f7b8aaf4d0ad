"""Keyword options checked against the signature of what will take them.

    check_options(particle, {"tau": 0.5}, "strategy 'particle'")

Strategies, verifiers and tasks take their knobs as keyword arguments; a user names them on the
command line (`--option key=value`), in a server request or in Python. This checks the names
before anything runs or loads, so a typo is a ValueError that lists the valid keys instead of a
TypeError from deep inside a constructor (or, worse, after a model has loaded). It lives in the
lowest layer because every layer above takes options; it imports nothing from ponder.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable


def option_names(fn: Callable, skip: Iterable[str] = ()) -> list[str] | None:
    """The keyword options `fn` accepts (None: any, it takes **kwargs)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    skip = set(skip)
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip
    ]


def check_options(fn: Callable, options: dict, what: str, skip: Iterable[str] = ()) -> None:
    """ValueError naming the unknown or missing keys and the valid ones, if `fn` cannot take
    `options` (keys in `skip` are passed by the caller, not the user)."""
    skip = set(skip)
    params = inspect.signature(fn).parameters.values()
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in skip
        and p.name not in options
    ]
    if missing:
        raise ValueError(f"{what} needs option {', '.join(map(repr, missing))}")
    valid = option_names(fn, skip)
    if valid is None:
        return
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"{what} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    check_option_types(fn, options, what)


def check_option_types(fn: Callable, options: dict, what: str) -> None:
    """ValueError when a value does not have its parameter's annotated type (int, float, bool,
    str, unions with None); other annotations are not checked. A float option takes an int."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that cannot be resolved: nothing to check against
        return
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not _accepts(hint, value):
            raise ValueError(f"{what}: option {key!r} must be {_describe(hint)}, got {value!r}")


def _accepts(hint, value) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    return True  # containers, callables, protocols: the callee checks them


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
    return names.get(hint, "None" if hint is type(None) else getattr(hint, "__name__", str(hint)))
