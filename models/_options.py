"""String-enum options: one place that validates choices and says what was expected."""
from __future__ import annotations

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
