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

from ._input import check_image, pad_image
from ._registry import register_model


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


def down(channels: int) -> nn.Sequential:
    """Halve the resolution, double the channels: 3x3 conv to C/2, pixel-unshuffle."""
    return nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def up(channels: int) -> nn.Sequential:
    """Double the resolution, halve the channels: 3x3 conv to 2C, pixel-shuffle."""
    return nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


class Restormer(nn.Module):
    def __init__(self, in_chans: int = 1, out_chans: int = 1, dim: int = 48, num_blocks: Sequence[int] = (4, 6, 6, 8),
                 num_refinement_blocks: int = 4, heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion: float = 2.66,
                 bias: bool = False, norm_bias: bool = True):
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4 or min(num_blocks) < 1 or num_refinement_blocks < 0:
            raise ValueError(f"Restormer needs 4 positive block counts and 4 head counts; got {num_blocks}, {heads}")
        if in_chans != out_chans:
            raise ValueError(f"the global residual needs in_chans == out_chans; got {in_chans} and {out_chans}")
        self.in_chans = in_chans

        def stage(channels: int, depth: int, level_heads: int) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(channels, level_heads, ffn_expansion, bias, norm_bias)
                                   for _ in range(depth)])

        n1, n2, n3, n4 = num_blocks
        h1, h2, h3, h4 = heads
        self.patch_embed = nn.Conv2d(in_chans, dim, 3, padding=1, bias=bias)
        self.encoder1, self.down1 = stage(dim, n1, h1), down(dim)
        self.encoder2, self.down2 = stage(2 * dim, n2, h2), down(2 * dim)
        self.encoder3, self.down3 = stage(4 * dim, n3, h3), down(4 * dim)
        self.latent = stage(8 * dim, n4, h4)
        self.up3, self.reduce3, self.decoder3 = up(8 * dim), nn.Conv2d(8 * dim, 4 * dim, 1, bias=bias), stage(4 * dim, n3, h3)
        self.up2, self.reduce2, self.decoder2 = up(4 * dim), nn.Conv2d(4 * dim, 2 * dim, 1, bias=bias), stage(2 * dim, n2, h2)
        self.up1, self.decoder1 = up(2 * dim), stage(2 * dim, n1, h1)                # no reduction at level 1
        self.refinement = stage(2 * dim, num_refinement_blocks, h1)
        self.output = nn.Conv2d(2 * dim, out_chans, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image("Restormer", x, self.in_chans, self.patch_embed.weight.dtype)
        height, width = x.shape[2:]
        image = pad_image(x, multiple=8)
        enc1 = self.encoder1(self.patch_embed(image))
        enc2 = self.encoder2(self.down1(enc1))
        enc3 = self.encoder3(self.down2(enc2))
        latent = self.latent(self.down3(enc3))
        dec3 = self.decoder3(self.reduce3(torch.cat([self.up3(latent), enc3], 1)))
        dec2 = self.decoder2(self.reduce2(torch.cat([self.up2(dec3), enc2], 1)))
        dec1 = self.decoder1(torch.cat([self.up1(dec2), enc1], 1))
        return (self.output(self.refinement(dec1)) + image)[:, :, :height, :width]


@register_model
def restormer(**kwargs) -> Restormer:
    return Restormer(**kwargs)


@register_model
def restormer_tiny(**kwargs) -> Restormer:
    return Restormer(**{"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, **kwargs})
