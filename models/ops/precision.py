"""The one precision policy of the kernel ops (``wkv.bi_wkv`` / ``uni_wkv``, ``selective_scan``), on
every backend, whatever dtypes they are given and whatever autocast surrounds them.

- **Compute dtype** (``compute_dtype``): float64 when an input is float64 or the op needs float64's
  range, else float32. float16 and bfloat16 inputs are computed in float32: the WKV's ``e^{k}`` overflows
  float16 above k = 11, and bfloat16's 8 bits cannot hold sums over thousands of tokens. The ops that
  need float64's range: ``uni_wkv`` on the PyTorch path and the CPU kernel (the maximum of k may lie
  in a token's future, see ``wkv/__init__.py``); ``bi_wkv`` on the CPU kernel where ``|w| (T - 1) > 20``;
  the PyTorch selective scan's chunk sums (its float64 ``exp(-S)``). The Triton WKV sums in float32
  at any span (log-space sums anchored at the heaviest token cannot overflow), so that its dispatch
  never reads ``w`` on the host.
- **Autocast is off inside** (``full_precision``): under ``torch.autocast`` (``train.precision:
  bf16``) the layers around the ops run in bfloat16, the ops themselves as above.
- **Output dtype**: the op's value input (``v`` for WKV; the scan's ``u`` in float32 or float64).
- **Training** (``training_autocast``): ``train.precision: fp32`` runs the step as it is; ``bf16``
  runs its forward and loss under bfloat16 autocast (weights, gradients and Adam stay float32; no loss
  scaling is needed with bfloat16's float32 range). Validation and testing run in float32.
- **Recorded**: each call notes its backend and compute dtype on the calling layer's
  ``backends.KernelChoice``; ``RestorationModel.used_backends()`` / ``kernel_dtypes()`` report them
  and a run writes both to ``train.json``.
"""
from __future__ import annotations

import contextlib

import torch


def compute_dtype(*tensors: torch.Tensor, needs_float64: bool = False) -> torch.dtype:
    """float64 if asked or any of ``tensors`` is float64, else float32."""
    if needs_float64 or any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off for ``device``'s type inside the block (a no-op where none is active)."""
    device_type = torch.device(device).type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


PRECISIONS = ("fp32", "bf16")


def training_autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context of a training step's forward and loss for ``train.precision``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"unknown train.precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
