"""SRCNN (Dong et al., 2014) for same-size restoration: three convolutions 9-5-5 with 64 and 32
filters, biases and ReLUs, 'same' padding so that the output has the input's size (the original
works on an interpolated input of the output size, which same-size restoration already is).

Paper size (Tables 1-2): 0.0573 M parameters, 0.9369 G MACs at 1x1x128x128.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._contract import RestorationModel
from ._input import check_image
from ._registry import register_model


class SRCNN(RestorationModel):
    def __init__(self, in_chans: int = 1, features: tuple[int, int] = (64, 32), kernels: tuple[int, int, int] = (9, 5, 5)):
        super().__init__()
        if len(features) != 2 or len(kernels) != 3 or min(features) < 1 or any(k % 2 == 0 for k in kernels):
            raise ValueError(f"SRCNN needs 2 positive feature counts and 3 odd kernel sizes; got {features}, {kernels}")
        self.in_chans = in_chans
        channels = (in_chans, *features, in_chans)
        self.convs = nn.ModuleList(nn.Conv2d(channels[i], channels[i + 1], k, padding=k // 2)
                                   for i, k in enumerate(kernels))

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("SRCNN", x, self.in_chans, self.convs[0].weight.dtype)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = torch.relu(x)
        return x


@register_model(paper="SRCNN")
def srcnn(**kwargs) -> SRCNN:
    return SRCNN(**kwargs)


@register_model(floored=True)        # the paper's size / 150 is 382 parameters: raised to the floor
def srcnn_tiny(**kwargs) -> SRCNN:
    return SRCNN(**{"features": (15, 7), **kwargs})          # (64, 32) x 0.227: 4,038 parameters
