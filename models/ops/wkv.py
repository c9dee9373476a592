"""WKV attention in pure PyTorch: linear time and memory, differentiable, CPU and CUDA.

Shapes (both ops): ``w, u: (C,)``; ``k, v: (B, T, C)``; output ``(B, T, C)`` in the dtype of ``v``.
``w`` and ``u`` are used as given: Restore-RWKV divides them by T before the call (Eq. 8).

``bi_wkv`` (Vision-RWKV, Restore-RWKV Eq. 8)::

    y_t = [sum_{i != t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t] / [same with v = 1]

``uni_wkv`` (RWKV's causal WKV)::

    y_t = [sum_{i < t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t] / [same with v = 1]

How it stays O(T*C) and finite
------------------------------
The decayed sum over the past, ``A_t = sum_{i<t} e^{-(t-1-i) w} x_i``, factorises as
``e^{-(t-1-c) w} * sum_{i<t} e^{(i-c) w} x_i``: one cumulative sum per channel. Centring the
positions at ``c = (T-1)/2`` keeps every factor within ``e^{+-|w| T / 2}``. The sum over the future
is the same computation on the flipped sequence (a reverse cumsum; subtracting prefix sums from the
total would cancel catastrophically when ``w > 0``).

``k`` is shifted by its per-(batch, channel) maximum over the sequence, which changes nothing
mathematically (numerator and denominator share the factor). For ``bi_wkv`` every token sees the
maximum token with weight at least ``e^{-|w|T - |u|}``, so after the shift the denominator stays
above ``e^{-20}`` or so for the spec range (``|k| <= 60``, ``|w T|, |u T| <= 20``) and float32 is
enough. For ``uni_wkv`` the maximum may lie in a token's future, where float32's ``e^{-88}``
underflow would turn ``0/0``; it therefore computes in float64 (range ``e^{+-708}``).

Valid range (checked, ``ValueError`` otherwise): ``|w| * (T - 1) <= 150`` in float32 and ``<= 1200``
in float64, so that ``e^{|w| T / 2} * T`` cannot overflow.
"""
from __future__ import annotations

import torch

# |w| * (T - 1) beyond which the centred cumulative sum could overflow in this compute dtype.
_MAX_DECAY_SPAN = {torch.float32: 150.0, torch.float64: 1200.0}


def _check_inputs(op: str, w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
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


def _check_decay_span(op: str, w: torch.Tensor, tokens: int, dtype: torch.dtype) -> None:
    span = float(w.detach().abs().max()) * (tokens - 1)
    limit = _MAX_DECAY_SPAN[dtype]
    if not span <= limit:  # also catches NaN
        raise ValueError(
            f"{op}: |w| * (T - 1) = {span:.4g} exceeds {limit:g}, the range this formulation supports in "
            f"{str(dtype).removeprefix('torch.')}; w is expected already divided by T (Restore-RWKV Eq. 8)")


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


def bi_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bidirectional WKV (Restore-RWKV Eq. 8). ``w, u: (C,)``; ``k, v: (B, T, C)`` -> ``(B, T, C)``.

    float16 / bfloat16 inputs are computed in float32; float64 stays float64.
    """
    _check_inputs("bi_wkv", w, u, k, v)
    compute = torch.float64 if v.dtype == torch.float64 else torch.float32
    _check_decay_span("bi_wkv", w, k.shape[1], compute)
    w, u, k, v_c = (t.to(compute) for t in (w, u, k, v))
    x, now = _weighted_terms(u, k, v_c)
    past = _decayed_past_sum(w, x)
    future = _decayed_past_sum(w, x.flip(-1)).flip(-1)                           # sum over i > t
    return _ratio(past + future + now, v.dtype)


def uni_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal WKV (RWKV). ``w, u: (C,)``; ``k, v: (B, T, C)`` -> ``(B, T, C)``.

    Computed in float64 whatever the input dtype (see the module docstring), returned in ``v.dtype``.
    """
    _check_inputs("uni_wkv", w, u, k, v)
    compute = torch.float64
    _check_decay_span("uni_wkv", w, k.shape[1], compute)
    w, u, k, v_c = (t.to(compute) for t in (w, u, k, v))
    x, now = _weighted_terms(u, k, v_c)
    return _ratio(_decayed_past_sum(w, x) + now, v.dtype)
