"""EDSR (Lim et al., 2017) for same-size restoration: a head convolution, residual blocks
(conv-ReLU-conv, scaled by ``res_scale`` and added back), a body-end convolution with a long skip
from the head, and a tail convolution.

As in the paper's comparison: 32 blocks of 256 features, res_scale 0.1, no up-sampler and no mean
shift (single-channel, same-size), and convolutions without biases - that is what reproduces the
paper's 38.3432 M parameters (the published EDSR code uses biases). 628.2145 G MACs at 1x1x128x128.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._contract import RestorationModel
from ._input import check_image
from ._registry import register_model


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ResBlock(nn.Module):
    def __init__(self, features: int, res_scale: float):
        super().__init__()
        self.conv1, self.conv2, self.res_scale = _conv(features, features), _conv(features, features), res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(torch.relu(self.conv1(x)))


class EDSR(RestorationModel):
    def __init__(self, in_chans: int = 1, blocks: int = 32, features: int = 256, res_scale: float = 0.1):
        super().__init__()
        if blocks < 1 or features < 1:
            raise ValueError(f"EDSR needs blocks >= 1 and features >= 1; got {blocks}, {features}")
        self.in_chans = in_chans
        self.head = _conv(in_chans, features)
        self.body = nn.Sequential(*[ResBlock(features, res_scale) for _ in range(blocks)], _conv(features, features))
        self.tail = _conv(features, in_chans)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("EDSR", x, self.in_chans, self.head.weight.dtype)
        head = self.head(x)
        return self.tail(self.body(head) + head)


@register_model(paper="EDSR")
def edsr(**kwargs) -> EDSR:
    return EDSR(**kwargs)


@register_model
def edsr_tiny(**kwargs) -> EDSR:
    return EDSR(**{"blocks": 6, "features": 48, **kwargs})
