"""The 4-level U-Net of Restormer, shared by the models built on its layout (Restore-RWKV,
Restormer, MambaIR, AMIR).

patch embedding (3x3 conv) -> encoder stages at C, 2C, 4C with down-sampling between them ->
latent stage at 8C -> decoder stages at 4C and 2C (up-sampling, concatenation with the skip, 1x1
reduction) -> decoder stage at 2C (up-sampling and concatenation, no reduction) -> refinement at
2C -> 3x3 output conv, plus the input (global residual). Inputs are padded to a multiple of 8.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from ._contract import RestorationModel
from ._input import check_image, pad_image


def down(channels: int) -> nn.Sequential:
    """Halve the resolution, double the channels: 3x3 conv to C/2, pixel-unshuffle."""
    return nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def up(channels: int) -> nn.Sequential:
    """Double the resolution, halve the channels: 3x3 conv to 2C, pixel-shuffle."""
    return nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


class RestormerUNet(RestorationModel):
    """``stage(level, channels, depth)`` builds one stage (level 0-3 of the encoder, the same level
    index for the decoder; the refinement is level 0)."""

    def __init__(self, name: str, in_chans: int, out_chans: int, dim: int, num_blocks: Sequence[int],
                 num_refinement_blocks: int, stage: Callable[[int, int, int], nn.Module], bias: bool = False):
        super().__init__()
        if len(num_blocks) != 4 or min(num_blocks) < 1 or num_refinement_blocks < 0:
            raise ValueError(f"{name} needs 4 positive block counts and num_refinement_blocks >= 0; "
                             f"got {num_blocks}, {num_refinement_blocks}")
        if in_chans != out_chans:
            raise ValueError(f"the global residual needs in_chans == out_chans; got {in_chans} and {out_chans}")
        self.name, self.in_chans = name, in_chans
        n1, n2, n3, n4 = num_blocks
        self.patch_embed = nn.Conv2d(in_chans, dim, 3, padding=1, bias=bias)
        self.encoder1, self.down1 = stage(0, dim, n1), down(dim)
        self.encoder2, self.down2 = stage(1, 2 * dim, n2), down(2 * dim)
        self.encoder3, self.down3 = stage(2, 4 * dim, n3), down(4 * dim)
        self.latent = stage(3, 8 * dim, n4)
        self.up3, self.reduce3, self.decoder3 = up(8 * dim), nn.Conv2d(8 * dim, 4 * dim, 1, bias=bias), stage(2, 4 * dim, n3)
        self.up2, self.reduce2, self.decoder2 = up(4 * dim), nn.Conv2d(4 * dim, 2 * dim, 1, bias=bias), stage(1, 2 * dim, n2)
        self.up1, self.decoder1 = up(2 * dim), stage(0, 2 * dim, n1)                 # no reduction at level 1
        self.refinement = stage(0, 2 * dim, num_refinement_blocks)
        self.output = nn.Conv2d(2 * dim, out_chans, 3, padding=1, bias=bias)

    def prepare(self, image: torch.Tensor):
        """Per-image context computed once per forward and passed to ``adapt`` (none by default)."""
        return None

    def adapt(self, stage: str, x: torch.Tensor, context) -> torch.Tensor:
        """Hook on the input of each stage ('encoder1'..'encoder3', 'latent', 'decoder3'..'decoder1');
        the identity by default, where a model routes or conditions its features."""
        return x

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image(self.name, x, self.in_chans, self.patch_embed.weight.dtype)
        height, width = x.shape[2:]
        image = pad_image(x, multiple=8)
        context = self.prepare(image)
        enc1 = self.encoder1(self.adapt("encoder1", self.patch_embed(image), context))
        enc2 = self.encoder2(self.adapt("encoder2", self.down1(enc1), context))
        enc3 = self.encoder3(self.adapt("encoder3", self.down2(enc2), context))
        latent = self.latent(self.adapt("latent", self.down3(enc3), context))
        dec3 = self.decoder3(self.adapt("decoder3", self.reduce3(torch.cat([self.up3(latent), enc3], 1)), context))
        dec2 = self.decoder2(self.adapt("decoder2", self.reduce2(torch.cat([self.up2(dec3), enc2], 1)), context))
        dec1 = self.decoder1(self.adapt("decoder1", torch.cat([self.up1(dec2), enc1], 1), context))
        return (self.output(self.refinement(dec1)) + image)[:, :, :height, :width]
