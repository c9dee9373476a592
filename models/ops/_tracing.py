"""Helpers for ops that op counters (``benchmark.profile``) see as one traced node."""
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
