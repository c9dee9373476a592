"""Xformer (Zhang et al., ICLR 2024): an X-shaped pair of 4-level U-Nets over the same features, one
of channel-wise transformer blocks (CTB: Restormer's MDTA + GDFN) and one of spatial-wise window
transformer blocks (STB: Swin layers, windows of 16, shifted in every other block), exchanging
features through bidirectional connection units (BCU: the channel branch adds a depth-wise conv of
the spatial one, the spatial branch a full conv of the channel one) at level 2 of the encoder and
levels 2 and 1 of the decoder, and sharing the spatial latent stage; a CTB refinement stage on the
concatenated outputs.

As in the paper's comparison: dim 48, channel blocks [2, 4, 4], spatial blocks [2, 4, 4, 6], 4
refinement blocks, heads [1, 2, 4, 8], window 16, FFN/MLP expansion 2.66, convolutions without
bias (the BCU convolutions have one), bias-free LayerNorm in the CTBs (nn.LayerNorm in the STBs);
one channel in and out. 25.2197 M parameters, 35.7291 G MACs at 1x1x128x128 (thop: convolutions,
linear layers, the STBs' LayerNorm and softmax modules; the shared latent stage is counted on both
of its calls).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._contract import RestorationModel
from ._input import check_image, pad_image
from ._registry import register_model
from ._unet import down, up
from .restormer import TransformerBlock
from .swinir import SwinLayer


class SpatialBlock(SwinLayer):
    """A Swin layer on (B, C, H, W) maps of any size: the normalised map is zero-padded to whole
    windows for the attention and cropped back; the shift is off when one window covers it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1)
        normed = F.pad(self.norm1(tokens), (0, 0, 0, -w % self.window, 0, -h % self.window))
        shift = self.shift if min(normed.shape[1:3]) > self.window else 0
        tokens = tokens + self.attend(normed, shift)[:, :h, :w]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.permute(0, 3, 1, 2)


class Xformer(RestorationModel):
    def __init__(self, in_chans: int = 1, out_chans: int = 1, dim: int = 48, num_blocks: Sequence[int] = (2, 4, 4),
                 spatial_blocks: Sequence[int] = (2, 4, 4, 6), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), window: int = 16, expansion: float = 2.66, bias: bool = False,
                 norm_bias: bool = False):
        super().__init__()
        if len(num_blocks) != 3 or len(spatial_blocks) != 4 or len(heads) != 4 or min(*num_blocks, *spatial_blocks) < 1:
            raise ValueError(f"Xformer needs 3 channel-branch and 4 spatial-branch positive block counts and 4 head "
                             f"counts; got {num_blocks}, {spatial_blocks}, {heads}")
        if in_chans != out_chans:
            raise ValueError(f"the global residual needs in_chans == out_chans; got {in_chans} and {out_chans}")
        self.in_chans = in_chans
        widths = [dim, 2 * dim, 4 * dim, 8 * dim]

        def channel(level: int, depth: int, width: int | None = None) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(width or widths[level], heads[level], expansion, bias, norm_bias)
                                   for _ in range(depth)])

        def spatial(level: int) -> nn.Sequential:
            return nn.Sequential(*[SpatialBlock(widths[level], heads[level], window, 0 if i % 2 == 0 else window // 2,
                                                expansion) for i in range(spatial_blocks[level])])

        self.patch_embed = nn.Conv2d(in_chans, dim, 3, padding=1, bias=bias)
        # channel branch (its latent stage is the spatial one, shared)
        self.c_encoders = nn.ModuleList(channel(i, num_blocks[i]) for i in range(3))
        self.c_downs = nn.ModuleList(down(widths[i]) for i in range(3))
        self.c_ups = nn.ModuleList(up(widths[i + 1]) for i in range(3))                  # level i+1 -> i
        self.c_reduces = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1, bias=bias) for i in range(3))
        self.c_decoders = nn.ModuleList(channel(i, num_blocks[i]) for i in range(3))
        # spatial branch
        self.s_encoders = nn.ModuleList(spatial(i) for i in range(3))
        self.s_downs = nn.ModuleList(down(widths[i]) for i in range(3))
        self.latent = spatial(3)
        self.s_ups = nn.ModuleList(up(widths[i + 1]) for i in range(3))
        self.s_reduces = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1, bias=bias) for i in range(3))
        self.s_decoders = nn.ModuleList(spatial(i) for i in range(3))
        # bidirectional connection units: encoder level 2 and 3 inputs, decoder level 2 and 1
        bcu_widths = [widths[1], widths[2], widths[1], widths[0]]
        self.bcu_full = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for c in bcu_widths)          # into spatial
        self.bcu_depthwise = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, groups=c) for c in bcu_widths)  # into channel
        self.refinement = channel(0, num_refinement_blocks, widths[1])
        self.output = nn.Conv2d(widths[1], out_chans, 3, padding=1, bias=bias)

    def _exchange(self, unit: int, channel_x: torch.Tensor, spatial_x: torch.Tensor):
        return channel_x + self.bcu_depthwise[unit](spatial_x), spatial_x + self.bcu_full[unit](channel_x)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("Xformer", x, self.in_chans, self.patch_embed.weight.dtype)
        height, width = x.shape[2:]
        image = pad_image(x, multiple=8)
        c = s = self.patch_embed(image)
        c_skips, s_skips = [], []
        for level in range(3):
            c, s = self.c_encoders[level](c), self.s_encoders[level](s)
            c_skips.append(c)
            s_skips.append(s)
            c, s = self.c_downs[level](c), self.s_downs[level](s)
            if level < 2:                                                 # inputs of encoder levels 2, 3
                c, s = self._exchange(level, c, s)
        c, s = self.latent(c), self.latent(s)                             # the shared latent stage
        for level in (2, 1, 0):
            c = self.c_reduces[level](torch.cat([self.c_ups[level](c), c_skips[level]], 1))
            s = self.s_reduces[level](torch.cat([self.s_ups[level](s), s_skips[level]], 1))
            if level < 2:                                                 # inputs of decoder levels 2, 1
                c, s = self._exchange(3 - level, c, s)
            c, s = self.c_decoders[level](c), self.s_decoders[level](s)
        restored = self.output(self.refinement(torch.cat([c, s], 1))) + image
        return restored[:, :, :height, :width]


@register_model(paper="Xformer")
def xformer(**kwargs) -> Xformer:
    return Xformer(**kwargs)


@register_model
def xformer_tiny(**kwargs) -> Xformer:
    return Xformer(**{"dim": 6, "num_blocks": (1, 1, 1), "spatial_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1,
                      "window": 4, **kwargs})
