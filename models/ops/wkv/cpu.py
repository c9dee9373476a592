"""The compiled CPU WKV kernel (``csrc/wkv_cpu.cpp``, built on first use by ``_extension``) as an
autograd Function."""
from __future__ import annotations

import torch

from .. import _extension, precision
from .limits import check_decay_span

class _KernelWKV(torch.autograd.Function):
    """Forward and backward of the compiled CPU kernel; inputs already in its dtypes. Its ``forward``
    returns ``[y, *saved]`` (what its backward needs besides w, u, v, y: the exponentials it computed)."""

    @staticmethod
    def forward(ctx, w, u, k, v, causal: bool, kernel):
        y, *saved = kernel.forward(w, u, k, v, causal)
        ctx.save_for_backward(w, u, v, y, *saved)
        ctx.causal, ctx.kernel = causal, kernel
        return y

    @staticmethod
    def backward(ctx, gy):
        w, u, v, y, *saved = ctx.saved_tensors
        gw, gu, gk, gv = ctx.kernel.backward(w, u, v, y, gy.to(y.dtype).contiguous(), saved, ctx.causal)
        return gw.to(w.dtype), gu.to(u.dtype), gk, gv, None, None



def wkv_cpu(op: str, w, u, k, v, causal: bool, span: float) -> torch.Tensor:
    """The kernel on float32 or float64 copies of the inputs (it widens its own sums)."""
    kernel = _extension.load("cpu")
    dtype = precision.compute_dtype(k, v)
    check_decay_span(op, span, dtype, kernel=True)
    args = [t.to(dtype).contiguous() for t in (w, u, k, v)]
    return _KernelWKV.apply(*args, causal, kernel).to(v.dtype)
