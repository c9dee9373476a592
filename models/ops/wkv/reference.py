"""The WKV evaluated literally, in float64, in O(T^2) time and memory: the reference every path
is tested against (``oracle``: an explicit table of log-weights normalised with softmax;
``oracle_with_grad``: the same formula with plain exponentials, differentiable)."""
from __future__ import annotations

import torch


def oracle(w, u, k, v, causal, differentiable=False):
    """Direct evaluation: an explicit (B, T, T, C) table of log-weights, normalised with softmax
    (finite at any span and key spread). ``differentiable``: the inputs (float64) are used as given,
    so that autograd through the table gives the reference gradients; else detached copies."""
    if not differentiable:
        w, u, k, v = (t.detach().double() for t in (w, u, k, v))
    B, T, C = k.shape
    pos = torch.arange(T, dtype=torch.float64)
    diff = pos[:, None] - pos[None, :]                       # t - i
    distance = (diff - 1) if causal else (diff.abs() - 1)
    log_weight = -distance[None, :, :, None] * w + k[:, None, :, :]            # (B, t, i, C)
    visible = (diff > 0) if causal else (diff != 0)
    log_weight = log_weight.masked_fill(~visible[None, :, :, None], float("-inf"))
    on_diagonal = torch.eye(T, dtype=torch.bool)[None, :, :, None]
    log_weight = torch.where(on_diagonal, (u + k)[:, :, None, :], log_weight)  # bonus e^{u + k_t}
    return (torch.softmax(log_weight, dim=2) * v[:, None, :, :]).sum(2)


def oracle_with_grad(w, u, k, v, causal):
    """Same formula, differentiable, evaluated without softmax tricks (float64 exp directly)."""
    B, T, C = k.shape
    pos = torch.arange(T, dtype=torch.float64)
    diff = pos[:, None] - pos[None, :]
    distance = (diff - 1) if causal else (diff.abs() - 1)
    visible = ((diff > 0) if causal else (diff != 0)).double()[None, :, :, None]
    eye = torch.eye(T, dtype=torch.float64)[None, :, :, None]
    weight = visible * torch.exp(-distance[None, :, :, None] * w + k[:, None, :, :]) \
        + eye * torch.exp(u + k)[:, None, :, :]
    return (weight * v[:, None, :, :]).sum(2) / weight.sum(2)
