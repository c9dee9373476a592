"""The one way to declare what a configuration key may hold, and to check it.

A key is declared by a type hint, as a model option is by its constructor's annotation:
``int``, ``float`` (finite), ``bool``, ``str``, ``Literal[...]``, ``X | None``, ``list[X]``,
``tuple[X, Y]``, ``dict[str, X]``, optionally ``Annotated`` with a ``Range`` (numeric bounds, on
every number of a list) and a ``Says`` (how an error names what is expected). The run
configuration (``benchmark.harness.config.KEYS``), the SLURM profiles
(``benchmark.harness.executors.slurm.PROFILE_KEYS``) and every model's options
(``check_option_types``) are checked by ``problem`` against such hints.

>>> problem(0, Annotated[int, Range(min=1)])
'a positive integer'
>>> problem(-1.0, Annotated[float, Range(above=0)])
'> 0'
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from typing import Annotated, Iterable


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number (of each number of a list): ``min`` inclusive, ``above`` / ``below`` exclusive."""
    min: float | None = None
    above: float | None = None
    below: float | None = None

    def holds(self, value) -> bool:
        if isinstance(value, (list, tuple)):
            return all(self.holds(v) for v in value)
        return ((self.min is None or value >= self.min) and (self.above is None or value > self.above)
                and (self.below is None or value < self.below))

    def text(self) -> str:
        parts = [f">= {self.min:g}" if self.min is not None else "", f"> {self.above:g}" if self.above is not None
                 else "", f"< {self.below:g}" if self.below is not None else ""]
        return " and ".join(p for p in parts if p)


@dataclasses.dataclass(frozen=True)
class Says:
    """What an error says is expected, in words (instead of the description made from the hint)."""
    text: str


def _parts(hint) -> tuple[object, Range | None, Says | None]:
    """(the bare hint, its Range, its Says) of a possibly ``Annotated`` hint."""
    if typing.get_origin(hint) is Annotated:
        bare, *extras = typing.get_args(hint)
        return (bare, next((e for e in extras if isinstance(e, Range)), None),
                next((e for e in extras if isinstance(e, Says)), None))
    return hint, None, None


def problem(value, hint) -> str | None:
    """None if ``value`` fits ``hint``, else what was expected, in words (see the module docstring)."""
    bare, bounds, says = _parts(hint)
    if typing.get_origin(bare) in (typing.Union, types.UnionType) and value is not None and _matches(value, bare):
        options = [a for a in typing.get_args(bare) if a is not type(None)]
        if len(options) == 1:                          # X | None holding an X: X's range, or the union's
            inner, inner_bounds, _ = _parts(options[0])
            bounds = bounds or inner_bounds
            if bounds is not None and not bounds.holds(value):
                return says.text if says else (describe(options[0]) if inner is int else bounds.text())
            return None
    if not _matches(value, bare):
        return says.text if says else describe(hint)
    if bounds is not None and value is not None and not bounds.holds(value):
        return says.text if says else (describe(hint) if bare is int else bounds.text())
    return None


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
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # annotations naming what cannot be imported here: nothing to check against
        return
    for name, value in options.items():
        wrong = problem(value, hints[name]) if name in hints else None
        if wrong is not None:
            raise ValueError(f"option {name} = {value!r}: expected {wrong}")


def _matches(value, hint) -> bool:
    hint = _parts(hint)[0]
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
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) and args:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) and args:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if hint is dict:
        return isinstance(value, dict)
    return True                                        # other types: the constructor checks them


def describe(hint) -> str:
    """What ``hint`` allows, in words (its ``Says`` when it has one)."""
    hint, bounds, says = _parts(hint)
    if says is not None:
        return says.text
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is int and bounds is not None and bounds.min in (0, 1) and bounds.above is None and bounds.below is None:
        return "a positive integer" if bounds.min == 1 else "a non-negative integer"
    if hint is float:
        return "a finite number"
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if hint is type(None):
        return "null (the default)"
    if origin in (list, tuple, collections.abc.Sequence) and args:
        return f"a list of {describe(args[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
