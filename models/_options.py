"""String-enum options: one place that validates choices and says what was expected."""
from __future__ import annotations

import collections.abc
import types
import typing
from typing import Iterable


def check_choice(option: str, value, choices: Iterable) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming both.

    >>> check_choice("shift", "omin", ("uni", "quad", "omni"))
    Traceback (most recent call last):
    ValueError: unknown shift 'omin'; expected one of uni, quad, omni
    """
    choices = tuple(choices)
    if value not in choices:
        expected = ", ".join(str(c) for c in choices)
        raise ValueError(f"unknown {option} {value!r}; expected one of {expected}")
    return value


def check_option_types(function, options: dict) -> None:
    """Raise a ValueError when an option's value does not have the type ``function`` annotates it
    with (``reparam: bool`` refuses ``"no"``, ``shift_kernel: int`` refuses ``5.0``); options
    without a resolvable annotation are left to ``function`` itself."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations naming what cannot be imported here: nothing to check against
        return
    for name, value in options.items():
        if name in hints and not _matches(value, hints[name]):
            raise ValueError(f"option {name} = {value!r}: expected {_describe(hints[name])}")


def _matches(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) and args:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    return True                                        # other types: the constructor checks them


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null (the default)"
    if origin in (list, tuple, collections.abc.Sequence) and args:
        return f"a list of {_describe(args[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
