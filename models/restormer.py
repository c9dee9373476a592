"""Restormer (Zamir et al., CVPR 2022): a 4-level U-Net of transformer blocks with multi-Dconv
head transposed attention (MDTA: attention across channels, so linear in the pixel count) and a
gated-Dconv feed-forward network (GDFN).

As in the paper's comparison: dim 48, blocks [4, 6, 6, 8], 4 refinement blocks, heads
[1, 2, 4, 8], FFN expansion 2.66, convolutions without bias, LayerNorm with bias; one channel in
and out. 26.1241 M parameters, 35.2052 G MACs at 1x1x128x128 (thop: the convolutions; the custom
channel LayerNorm and the attention matmuls are not modules it counts).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from ._unet import RestormerUNet


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) map, with or without bias."""

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True, unbiased=False)
        if self.bias is None:                                   # bias-free: scale only, no centring
            return x / torch.sqrt(var + 1e-5) * self.weight[:, None, None]
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight[:, None, None] + self.bias[:, None, None]


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: per head, softmax(q k^T * t) over channels."""

    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"MDTA: {dim} channels do not split into {heads} heads")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, 1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = torch.softmax(q @ k.transpose(-2, -1) * self.temperature, dim=-1)
        return self.project_out((attention @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: GELU(dwconv(x W1)) * dwconv(x W2), then W3."""

    def __init__(self, dim: int, expansion: float, bias: bool):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, 1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion: float, bias: bool, norm_bias: bool):
        super().__init__()
        self.norm1, self.attn = ChannelLayerNorm(dim, norm_bias), MDTA(dim, heads, bias)
        self.norm2, self.ffn = ChannelLayerNorm(dim, norm_bias), GDFN(dim, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Restormer(RestormerUNet):
    def __init__(self, in_chans: int = 1, out_chans: int = 1, dim: int = 48, num_blocks: Sequence[int] = (4, 6, 6, 8),
                 num_refinement_blocks: int = 4, heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion: float = 2.66,
                 bias: bool = False, norm_bias: bool = True):
        if len(heads) != 4:
            raise ValueError(f"Restormer needs 4 head counts; got {heads}")

        def stage(level: int, channels: int, depth: int) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(channels, heads[level], ffn_expansion, bias, norm_bias)
                                   for _ in range(depth)])

        super().__init__("Restormer", in_chans, out_chans, dim, num_blocks, num_refinement_blocks, stage, bias)


@register_model(paper="Restormer")
def restormer(**kwargs) -> Restormer:
    return Restormer(**kwargs)


@register_model
def restormer_tiny(**kwargs) -> Restormer:
    return Restormer(**{"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, **kwargs})
