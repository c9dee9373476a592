"""The R-RWKV block (Restore-RWKV Sec. 3.2): pre-norm spatial mix and channel mix, each added back
with a learnable per-channel residual scale."""
from __future__ import annotations

import torch
import torch.nn as nn

from .channel_mix import ChannelMix
from .spatial_mix import ScanPlan, SpatialMix


class RRWKVBlock(nn.Module):
    def __init__(self, dim: int, plan: ScanPlan, hidden_ratio: float = 4, shift: str = "omni",
                 shift_kernel: int = 5, reparam: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.spatial_mix = SpatialMix(dim, plan, shift, shift_kernel, reparam)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mix = ChannelMix(dim, hidden_ratio, shift, shift_kernel, reparam)
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        x = x + self.gamma1 * self.spatial_mix(self.norm1(x))
        return x + self.gamma2 * self.channel_mix(self.norm2(x))
