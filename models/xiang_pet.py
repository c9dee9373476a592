"""Xiang et al. (Neurocomputing 2017), deep auto-context CNNs for standard-dose PET estimation: a
chain of CNN modules that each map their inputs directly to the standard-dose image; following the
auto-context strategy, every module after the first sees the low-dose image together with the
previous module's estimate, which it refines.

No official code exists. Our reading, documented choice by choice:

- Input: the low-dose PET only. The paper's modules also take a T1 MR image; the Restore-RWKV
  benchmark (its Table 3) has no MR channel, so the first module has one input channel and every
  later module two (low-dose PET, previous estimate).
- Four modules; each a plain fully convolutional CNN of 3x3 convolutions with biases:
  in -> 64 -> 64 -> 32 -> 1, BatchNorm + ReLU after all but the last. Every module maps to the
  standard-dose image itself (the paper's end-to-end mapping, not a residual); the last module's
  estimate is the output.
- Training: the paper trains the modules one after another, each on its own estimate; the harness
  trains the chain end to end on the final estimate, like every other model.
- Size at 1x1x128x128 against the paper's Table 3 (0.2293 M parameters, 3.7654 G MACs): 0.2283 M
  (-0.4%) and 3.7508 G (-0.4%) in the paper's convention (thop), within the 3% the issue allows.
  The excess of MACs per pixel over parameters in the paper's numbers (about 520) is what thop
  charges for BatchNorm, which says the paper's network has norms as ours does.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._contract import RestorationModel
from ._input import check_image
from ._registry import register_model


def _module(in_chans: int, widths: tuple[int, ...], out_chans: int) -> nn.Sequential:
    layers, previous = [], in_chans
    for width in widths:
        layers += [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        previous = width
    return nn.Sequential(*layers, nn.Conv2d(previous, out_chans, 3, padding=1))


class AutoContextCNN(RestorationModel):
    def __init__(self, in_chans: int = 1, modules: int = 4, widths: tuple[int, ...] = (64, 64, 32)):
        super().__init__()
        if modules < 1 or not widths or min(widths) < 1:
            raise ValueError(f"Xiang's auto-context CNN needs modules >= 1 and positive widths; "
                             f"got {modules}, {widths}")
        self.in_chans = in_chans
        self.stages = nn.ModuleList(_module(in_chans * (1 if i == 0 else 2), tuple(widths), in_chans)
                                    for i in range(modules))

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("Xiang's auto-context CNN", x, self.in_chans, self.stages[0][0].weight.dtype)
        estimate = self.stages[0](x)
        for stage in self.stages[1:]:                                   # auto-context refinement
            estimate = stage(torch.cat([x, estimate], 1))
        return estimate


@register_model(paper="Xiang's", paper_tolerance=0.03)
def xiang_pet(**kwargs) -> AutoContextCNN:
    return AutoContextCNN(**kwargs)


@register_model(floored=True)        # the paper's size / 150 is 1,529 parameters: raised to the floor
def xiang_pet_tiny(**kwargs) -> AutoContextCNN:
    return AutoContextCNN(**{"widths": (8, 8, 4), **kwargs})  # (64, 64, 32) x 0.118: 4,348 parameters
