"""Helpers for ops that op counters (``benchmark.measure.costs``) see as one traced node."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def untraced():
    """The body of a single-op Function is not recorded by torch.jit.trace (only the op itself is)."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


class Switch:
    """A process-wide flag, off by default, set inside ``with switch.set(True):`` blocks."""

    def __init__(self):
        self.on = False

    @contextlib.contextmanager
    def set(self, value: bool):
        previous, self.on = self.on, value
        try:
            yield
        finally:
            self.on = previous
