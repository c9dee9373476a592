"""Channel mix (Restore-RWKV Eq. 5-7): token shift, squared-ReLU MLP, sigmoid(R) gate."""
from __future__ import annotations

import torch
import torch.nn as nn

from .token_shift import build_token_shift


class ChannelMix(nn.Module):
    def __init__(self, dim: int, hidden_ratio: float = 4, shift: str = "omni", shift_kernel: int = 5,
                 reparam: bool = True):
        super().__init__()
        hidden = int(hidden_ratio * dim)
        if hidden < 1:
            raise ValueError(f"hidden_ratio={hidden_ratio} gives no hidden channels at dim {dim}")
        self.shift = build_token_shift(shift, dim, n_out=2, kernel=shift_kernel, reparam=reparam)
        self.key = nn.Linear(dim, hidden, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C), already layer-normalised -> (B, H, W, C)."""
        xk, xr = self.shift(x)
        k = torch.square(torch.relu(self.key(xk)))                               # gamma(K_c), Eq. 6
        return torch.sigmoid(self.receptance(xr)) * self.value(k)                # Eq. 7
