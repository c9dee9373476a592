"""The PyTorch path of the WKV: linear time and memory through a centred cumulative sum (the
package docstring says how it stays O(T*C) and finite)."""
from __future__ import annotations

import torch

from .. import precision
from .limits import check_decay_span, decay_span

def _decayed_past_sum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A_t = sum_{i<t} exp(-(t-1-i) w) x_i`` along the last dim of ``x: (..., C, T)``, for every t."""
    tokens = x.shape[-1]
    position = torch.arange(tokens, device=x.device, dtype=x.dtype) - (tokens - 1) / 2  # (T,): i - c
    grow = torch.exp(w[:, None] * position)                                      # (C, T): e^{(i-c) w}
    scaled = x * grow
    # Exclusive prefix sum by shifting one token (cumsum minus the current term would cancel
    # catastrophically when e^{w} is large, i.e. for short sequences).
    past = torch.nn.functional.pad(torch.cumsum(scaled[..., :-1], dim=-1), (1, 0))
    return past * (torch.exp(w)[:, None] / grow)                                 # e^{-(t-1-c) w}


def _weighted_terms(u: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """From ``k, v: (B, T, C)``: the shifted weights ``x = (e^{k - max k} v, e^{k - max k})`` as
    (B, 2, C, T), tokens last (a cumsum over a strided middle dim is several times slower), and the
    bonus terms ``e^{u + k_t} x``."""
    k, v = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()        # (B, C, T)
    # The shift cancels in the ratio; detaching it keeps gradients exact (no y-to-max path).
    weight = torch.exp(k - k.detach().amax(dim=-1, keepdim=True))               # (B, C, T) in (0, 1]
    x = torch.stack((weight * v, weight), dim=1)                                 # (B, 2, C, T)
    return x, torch.exp(u)[:, None] * x


def _ratio(terms: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 2, C, T) numerator and denominator -> (B, T, C) output."""
    return (terms[:, 0] / terms[:, 1]).transpose(1, 2).contiguous().to(dtype)


def bi_wkv_torch(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    compute = precision.compute_dtype(k, v)
    check_decay_span("bi_wkv", decay_span(w, k.shape[1]), compute)
    w, u, k, v_c = (t.to(compute) for t in (w, u, k, v))
    x, now = _weighted_terms(u, k, v_c)
    past = _decayed_past_sum(w, x)
    future = _decayed_past_sum(w, x.flip(-1)).flip(-1)                           # sum over i > t
    return _ratio(past + future + now, v.dtype)


def uni_wkv_torch(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    compute = torch.float64
    check_decay_span("uni_wkv", decay_span(w, k.shape[1]), compute)
    w, u, k, v_c = (t.to(compute) for t in (w, u, k, v))
    x, now = _weighted_terms(u, k, v_c)
    return _ratio(_decayed_past_sum(w, x) + now, v.dtype)
