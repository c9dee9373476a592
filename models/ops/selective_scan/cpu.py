"""The compiled CPU selective scan (``csrc/selective_scan_cpu.cpp``, built on first use by
``_extension``) as an autograd Function."""
from __future__ import annotations

import torch

from .. import _extension
from .chunked import prepare


class _CompiledScan(torch.autograd.Function):
    """The CPU kernel: u, delta (b, d, l) as they are; B, C as (b, g, l, n) copies (a token's states
    together)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        kernel = _extension.load("scan_cpu")
        args = (u.contiguous(), delta.contiguous(), A.contiguous(), B.transpose(2, 3).contiguous(),
                C.transpose(2, 3).contiguous())
        ctx.save_for_backward(*args)
        ctx.kernel = kernel
        return kernel.forward(*args)

    @staticmethod
    def backward(ctx, gy):
        gu, gdelta, gA, gB, gC = ctx.kernel.backward(*ctx.saved_tensors, gy.contiguous())
        # gB, gC: one partial per tile of channels, (b, g, tiles, l, n) -> (b, g, n, l)
        return gu, gdelta, gA.to(gy.dtype), gB.sum(2).transpose(2, 3), gC.sum(2).transpose(2, 3)


def selective_scan_cpp(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The compiled CPU scan (``csrc/selective_scan_cpu.cpp``); the bias, softplus and D skip are
    elementwise PyTorch around it. float32 (half types computed in float32) or float64."""
    u, delta, A, B, C = prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    y = _CompiledScan.apply(u, delta, A, B, C)
    if D is not None:
        y = y + D.to(u.dtype)[:, None] * u
    return y
