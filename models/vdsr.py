"""VDSR (Kim et al., 2016): 20 3x3 convolutions of 64 filters without biases, ReLU between them,
and a global residual (the network predicts the difference to the input).

Paper size (Tables 1-2): 0.6647 M parameters, 10.8905 G MACs at 1x1x128x128.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._contract import RestorationModel
from ._input import check_image
from ._registry import register_model


class VDSR(RestorationModel):
    def __init__(self, in_chans: int = 1, depth: int = 20, features: int = 64):
        super().__init__()
        if depth < 2 or features < 1:
            raise ValueError(f"VDSR needs depth >= 2 and features >= 1; got {depth}, {features}")
        self.in_chans = in_chans
        channels = [in_chans] + [features] * (depth - 1) + [in_chans]
        self.convs = nn.ModuleList(nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, bias=False)
                                   for i in range(depth))

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("VDSR", x, self.in_chans, self.convs[0].weight.dtype)
        out = x
        for i, conv in enumerate(self.convs):
            out = conv(out)
            if i < len(self.convs) - 1:
                out = torch.relu(out)
        return out + x


@register_model(paper="VDSR")
def vdsr(**kwargs) -> VDSR:
    return VDSR(**kwargs)


@register_model
def vdsr_tiny(**kwargs) -> VDSR:
    return VDSR(**{"depth": 10, "features": 8, **kwargs})
