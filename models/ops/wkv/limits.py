"""What a WKV call may be given and what its sums accumulate in: input checks, the decay span
``|w| * (T - 1)`` and its limits per path and dtype (``precision.py``)."""
from __future__ import annotations

import torch

from .. import precision

# |w| * (T - 1) beyond which the sums could overflow: the centred cumsum in float32 / float64 and the
# CPU kernel's recurrences in their accumulation type (float32 only for bi_wkv within
# |w| (T - 1) <= CPU_FLOAT32_SPAN, float64 beyond). The Triton kernel has no limit: its sums are
# anchored in log space (every exponent <= 0, ``triton_launch.py``), so nothing overflows at any span
# and the dispatch never reads w on the host for it.
_MAX_DECAY_SPAN = {torch.float32: 150.0, torch.float64: 1200.0}
_MAX_DECAY_SPAN_KERNEL = {torch.float32: 80.0, torch.float64: 1200.0}
CPU_FLOAT32_SPAN = 20.0     # csrc/wkv_cpu.cpp's chunk states are float64 beyond


def check_inputs(op: str, w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"{op}: k and v must both have shape (B, T, C); got k {tuple(k.shape)}, v {tuple(v.shape)}")
    channels = k.shape[2]
    for name, t in (("w", w), ("u", u)):
        if t.shape != (channels,):
            raise ValueError(f"{op}: {name} must have shape (C,) = ({channels},); got {tuple(t.shape)}")
    for name, t in (("w", w), ("u", u), ("k", k), ("v", v)):
        if not t.is_floating_point():
            raise ValueError(f"{op}: {name} must be a floating-point tensor; got {t.dtype}")
        if t.device != k.device:
            raise ValueError(f"{op}: all inputs must be on one device; {name} is on {t.device}, k on {k.device}")
    if k.shape[1] == 0:
        raise ValueError(f"{op}: the sequence is empty (T = 0)")


def decay_span(w: torch.Tensor, tokens: int) -> float:
    """``|w| * (T - 1)``: the largest exponent the sums' decay factors reach (reads w on the host:
    a device sync on a GPU; the Triton path never calls it)."""
    return float(w.detach().abs().max()) * (tokens - 1)


def check_decay_span(op: str, span: float, dtype: torch.dtype, kernel: bool = False) -> None:
    limit = (_MAX_DECAY_SPAN_KERNEL if kernel else _MAX_DECAY_SPAN)[dtype]
    if not span <= limit:  # also catches NaN
        raise ValueError(
            f"{op}: |w| * (T - 1) = {span:.4g} exceeds {limit:g}, the range this formulation supports in "
            f"{str(dtype).removeprefix('torch.')}; w is expected already divided by T (Restore-RWKV Eq. 8)")


def accumulation_dtype(backend: str, causal: bool, span: float | None, k: torch.Tensor,
                       v: torch.Tensor) -> torch.dtype:
    """The dtype a call's sums accumulate in (``precision.py``). Triton: float32, float64 for float64
    inputs, at any span (``span`` unused: None, never read from the device). The other paths: float64
    for uni_wkv, for float64 inputs and for the CPU kernel's bi_wkv beyond ``CPU_FLOAT32_SPAN``;
    float32 otherwise."""
    if backend == "triton":
        return precision.compute_dtype(k, v)
    if causal:
        return torch.float64
    if backend == "torch":                   # the centred cumsum: float32 within its checked range
        return precision.compute_dtype(k, v)
    return precision.compute_dtype(k, v, needs_float64=not span <= CPU_FLOAT32_SPAN)
