"""The PyTorch path of the selective scan: chunks of up to 8 tokens solved in parallel from their
within-chunk cumulative sums, in float64, and the states entering the chunks by the same
recurrence over the chunk ends (the package docstring gives the bounds)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import precision

_BLOCK_ELEMENTS = 1 << 23  # elements of one (b, channels, l, n) temporary per channel block
# Decay per step (and per chunk of steps) floored at exp(-80) ~ 2e-35: a state that decays further is
# forgotten either way, and the floor keeps exp(-S) of a chunk of 8 within float64.
MAX_DECAY = 80.0


def _within(a_cumsum: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    """h_t = sum_{s <= t} exp(S_t - S_s) bu_s inside each chunk, as exp(S_t) * cumsum(exp(-S_s) bu_s):
    S >= -chunk * MAX_DECAY, so in float64 neither factor overflows for chunks up to 8."""
    return torch.exp(a_cumsum) * torch.cumsum(torch.exp(-a_cumsum) * bu, dim=-2)


def _scan(a: torch.Tensor, bu: torch.Tensor, chunk: int) -> torch.Tensor:
    """All states of h_t = exp(a_t) h_{t-1} + bu_t, h_0 = 0, along dim -2 of (..., l, n), float64."""
    a = a.clamp(min=-MAX_DECAY)
    length = a.shape[-2]
    if length <= chunk:
        return _within(a.cumsum(-2), bu)
    pad = -length % chunk
    if pad:                                                                     # a = 0, bu = 0: no change
        a, bu = F.pad(a, (0, 0, 0, pad)), F.pad(bu, (0, 0, 0, pad))
    shape = (*a.shape[:-2], a.shape[-2] // chunk, chunk, a.shape[-1])
    cumsum = a.reshape(shape).cumsum(-2)
    inside = _within(cumsum, bu.reshape(shape))                                 # from zero at each chunk start
    ends = _scan(cumsum[..., -1, :], inside[..., -1, :], chunk)                 # states at the chunk ends
    entering = F.pad(ends[..., :-1, :], (0, 0, 1, 0))                           # state before each chunk
    states = inside + torch.exp(cumsum) * entering.unsqueeze(-2)
    return states.reshape(*a.shape[:-2], -1, a.shape[-1])[..., :length, :]


def prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Shapes checked, B and C as (b, g, n, l), everything in the compute dtype (float64 for float64
    u, else float32), delta with its bias and softplus applied."""
    d = u.shape[1]
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    if d % B.shape[1] or A.shape[0] != d or delta.shape != u.shape:
        raise ValueError(f"selective_scan: u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)} and "
                         f"B {tuple(B.shape)} do not fit (d must split into the {B.shape[1]} groups of B)")
    compute = precision.compute_dtype(u)
    u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C


def selective_scan_torch(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, chunk: int = 8):
    b, d, length = u.shape
    u, delta, A, B, C = prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    compute, groups = u.dtype, B.shape[1]
    per_group = d // groups
    if not 1 <= chunk <= 8:
        raise ValueError(f"selective_scan: chunk must be in 1..8 (float64 range of exp(-S)); got {chunk}")
    block = max(1, min(d, _BLOCK_ELEMENTS // max(1, b * length * A.shape[1])))
    outputs = []
    for start in range(0, d, block):
        channels = slice(start, min(d, start + block))
        index = torch.arange(channels.start, channels.stop, device=u.device) // per_group
        a = delta[:, channels, :, None] * A[None, channels, None, :]              # (b, c, l, n), <= 0
        Bd = B[:, index].transpose(-1, -2)                                       # (b, c, l, n)
        Cd = C[:, index].transpose(-1, -2)
        states = _scan(a.double(), ((delta[:, channels] * u[:, channels])[..., None] * Bd).double(), chunk)
        outputs.append((states * Cd).sum(-1).to(compute))
    y = torch.cat(outputs, 1)
    if D is not None:
        y = y + D.to(compute)[:, None] * u
    return y
