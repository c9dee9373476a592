"""AMIR (Yang et al., all-in-one medical image restoration with task-adaptive routing): Restormer's
U-Net (dim 42, blocks [5, 7, 7, 9], 4 refinement, heads [1, 2, 4, 8], FFN 2.66, LayerNorm with bias)
conditioned on a degradation prompt that a small network infers from the input image itself (no
task label): convolutions and pooling give softmax weights over 32 learned atoms of 256 dimensions.

- Spatial routing at the inputs of encoder levels 1-3: per pixel, a sparsely gated mixture of 4
  MLP experts (ratio 2.66), the top 2 chosen from the pixel's features and the projected prompt
  (noisy top-k gating while training), combined as log(sum_i g_i exp(expert_i)) as in the authors'
  code, added to the features. Only the routed pixels go through an expert.
- Channel routing at the inputs of the latent stage and decoder levels 3-1: x + sigmoid(W prompt)
  (gamma x + beta), gamma and beta starting at 0.

The experts' load-balancing loss (squared coefficients of variation of the experts' importance and
load) is left in ``model.aux_loss`` after each training forward; the harness may add it. 23.5405 M
parameters, 31.7645 G MACs at 1x1x128x128 (thop, on an all-zero input whose pixels all route to
the same 2 experts).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._input import pad_image
from ._registry import register_model
from ._unet import RestormerUNet
from .restormer import TransformerBlock

ATOMS, ATOM_DIM = 32, 256


class PromptNet(nn.Module):
    """The degradation prompt of an image: softmax weights over learned atoms, mixed, GELU."""

    def __init__(self, in_chans: int, hidden: int = 64):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, hidden, 3, 3), nn.LeakyReLU(0.1), nn.Conv2d(hidden, hidden, 3, 3), nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(0.1), nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, 32, 1))
        self.to_weights = nn.Linear(32, ATOMS)
        self.dictionary = nn.Parameter(torch.randn(ATOMS, ATOM_DIM))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.features(image), 1).flatten(1)
        return F.gelu(torch.softmax(self.to_weights(pooled), -1) @ self.dictionary)


def _cv_squared(x: torch.Tensor) -> torch.Tensor:
    return x.float().var() / (x.float().mean() ** 2 + 1e-10) if x.numel() > 1 else x.new_zeros(())


class SpatialRouting(nn.Module):
    def __init__(self, dim: int, ratio: float, experts: int = 4, top: int = 2):
        super().__init__()
        self.top = top
        self.project = nn.Linear(ATOM_DIM, dim)
        hidden = int(dim * ratio)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                                     for _ in range(experts))
        self.w_gate = nn.Parameter(torch.randn(2 * dim, experts))
        self.w_noise = nn.Parameter(torch.zeros(2 * dim, experts))
        self.softmax = nn.Softmax(1)
        self.aux_loss = None

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(-1, c)
        context = self.project(prompt)[:, None, :].expand(b, h * w, c).reshape(-1, c)
        gating = torch.cat([tokens, context], 1)
        logits = gating @ self.w_gate
        if self.training:                                      # noisy top-k gating (Shazeer et al.)
            logits = logits + torch.randn_like(logits) * (F.softplus(gating @ self.w_noise) + 1e-2)
        top_logits, chosen = logits.topk(self.top, dim=1)
        gates = self.softmax(top_logits)                                   # (N, top)
        mixed = torch.full_like(tokens, float("-inf"))
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if rows.numel():
                value = torch.log(gates[rows, slot])[:, None] + expert(tokens[rows])
                mixed = mixed.index_put((rows,), torch.logaddexp(mixed[rows], value))
        dense = torch.zeros_like(logits).scatter(1, chosen, gates)
        self.aux_loss = _cv_squared(dense.sum(0)) + _cv_squared((dense > 0).sum(0))
        return x + mixed.reshape(b, h, w, c).permute(0, 3, 1, 2)


class ChannelRouting(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Linear(ATOM_DIM, dim)
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return x + (x * self.gamma + self.beta) * torch.sigmoid(self.project(prompt))[:, :, None, None]


class AMIR(RestormerUNet):
    SPATIAL = ("encoder1", "encoder2", "encoder3")

    def __init__(self, in_chans: int = 1, out_chans: int = 1, dim: int = 42, num_blocks: Sequence[int] = (5, 7, 7, 9),
                 num_refinement_blocks: int = 4, heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion: float = 2.66):
        if len(heads) != 4:
            raise ValueError(f"AMIR needs 4 head counts; got {heads}")

        def stage(level: int, channels: int, depth: int) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(channels, heads[level], ffn_expansion, False, True)
                                   for _ in range(depth)])

        super().__init__("AMIR", in_chans, out_chans, dim, num_blocks, num_refinement_blocks, stage)
        self.prompt = PromptNet(in_chans)
        self.routing = nn.ModuleDict({
            "encoder1": SpatialRouting(dim, ffn_expansion), "encoder2": SpatialRouting(2 * dim, ffn_expansion),
            "encoder3": SpatialRouting(4 * dim, ffn_expansion), "latent": ChannelRouting(8 * dim),
            "decoder3": ChannelRouting(4 * dim), "decoder2": ChannelRouting(2 * dim),
            "decoder1": ChannelRouting(2 * dim)})

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        return self.prompt(pad_image(image, minimum=9))        # two stride-3 convs need 9 pixels

    def adapt(self, stage: str, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return self.routing[stage](x, prompt)

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """The load-balancing loss of the last forward (the sum over the three MoE layers)."""
        losses = [self.routing[name].aux_loss for name in self.SPATIAL]
        return None if any(loss is None for loss in losses) else sum(losses)

    def auxiliary_loss(self, lq: torch.Tensor) -> torch.Tensor | None:
        """The contract's hook: the load-balancing loss of the last training forward."""
        return self.aux_loss if self.training else None


@register_model(paper="AMIR")
def amir(**kwargs) -> AMIR:
    return AMIR(**kwargs)


@register_model
def amir_tiny(**kwargs) -> AMIR:
    return AMIR(**{"dim": 4, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, **kwargs})
