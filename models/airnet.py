"""AirNet (Li et al., CVPR 2022), all-in-one restoration without a task label: a contrastive
degradation encoder (CBDE, a ResNet-style encoder trained with MoCo) gives a full-resolution
degradation map and an embedding; the restorer (DGRN: 5 groups of 5 degradation-guided blocks of
64 features) modulates its features with that map through degradation-guided modules (DGM: a
modulated deformable 3x3 conv whose offsets and masks come from features + map, plus a spatial
feature transform of the map).

Single-channel version of the authors' model; the deformable convolution is torchvision's
``deform_conv2d`` (the authors use mmcv's; same modulated DCNv2 operation). 7.6068 M trainable
parameters: the momentum key encoder (a frozen copy of the query encoder, updated by momentum) is
excluded, as in the paper. The paper's MACs (230.4830 G) are measured at 1x1x224x224.

Training: ``forward(x)`` restores with the query encoder (which, as in the authors' model, also
computes the degradation embedding that only the contrastive loss uses); ``contrastive_logits(query, key)`` (two
crops of the same degraded image) returns the InfoNCE logits against the queue of past keys, whose
target is class 0, updating the key encoder and the queue as MoCo does.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from ._contract import RestorationModel
from ._input import check_image
from ._registry import register_model


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.body(x) + self.shortcut(x), 0.1)


class DegradationEncoder(nn.Module):
    """-> (embedding (B, dim), projection for the contrastive loss (B, dim), degradation map (B, features, H, W))."""

    def __init__(self, in_chans: int, features: int = 64, dim: int = 256):
        super().__init__()
        self.pre = ResBlock(in_chans, features)
        self.body = nn.Sequential(ResBlock(features, 2 * features, 2), ResBlock(2 * features, dim, 2), nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor):
        degradation = self.pre(x)
        embedding = self.body(degradation).flatten(1)
        return embedding, self.mlp(embedding), degradation


class DGM(nn.Module):
    """x + modulated deformable conv(x; offsets, masks from [x, d]) + (x * gamma(d) + beta(d))."""

    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(features, features, 3, 3))
        nn.init.uniform_(self.weight, -(features * 9) ** -0.5, (features * 9) ** -0.5)
        self.offsets_masks = nn.Conv2d(2 * features, 3 * 9, 3, padding=1)
        nn.init.zeros_(self.offsets_masks.weight)
        nn.init.zeros_(self.offsets_masks.bias)
        self.gamma = nn.Sequential(nn.Conv2d(features, features, 1, bias=False), nn.LeakyReLU(0.1),
                                   nn.Conv2d(features, features, 1, bias=False))
        self.beta = nn.Sequential(nn.Conv2d(features, features, 1, bias=False), nn.LeakyReLU(0.1),
                                  nn.Conv2d(features, features, 1, bias=False))

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        offsets_y, offsets_x, mask = self.offsets_masks(torch.cat([x, degradation], 1)).chunk(3, 1)
        deformed = deform_conv2d(x, torch.cat([offsets_y, offsets_x], 1), self.weight, padding=1, mask=torch.sigmoid(mask))
        return x + deformed + x * self.gamma(degradation) + self.beta(degradation)


class DGB(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.dgm1, self.conv1 = DGM(features), nn.Conv2d(features, features, 3, padding=1)
        self.dgm2, self.conv2 = DGM(features), nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(F.leaky_relu(self.dgm1(x, degradation), 0.1)), 0.1)
        return self.conv2(F.leaky_relu(self.dgm2(out, degradation), 0.1)) + x


class DGG(nn.Module):
    def __init__(self, features: int, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(DGB(features) for _ in range(blocks))
        self.conv = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        out = x
        for block in self.blocks:
            out = block(out, degradation)
        return self.conv(out) + x


class AirNet(RestorationModel):
    def __init__(self, in_chans: int = 1, features: int = 64, groups: int = 5, blocks: int = 5, queue: int = 4096,
                 momentum: float = 0.999, temperature: float = 0.07, embed_dim: int = 256):
        super().__init__()
        if groups < 1 or blocks < 1:
            raise ValueError(f"AirNet needs groups, blocks >= 1; got {groups}, {blocks}")
        self.in_chans, self.momentum, self.temperature = in_chans, momentum, temperature
        self.encoder = DegradationEncoder(in_chans, features, embed_dim)
        self.key_encoder = copy.deepcopy(self.encoder).requires_grad_(False)   # not trained: excluded from the count
        self.register_buffer("queue", F.normalize(torch.randn(embed_dim, queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.head = nn.Conv2d(in_chans, features, 3, padding=1)
        self.body = nn.ModuleList(DGG(features, blocks) for _ in range(groups))
        self.body_end = nn.Conv2d(features, features, 3, padding=1)
        self.tail = nn.Conv2d(features, in_chans, 3, padding=1)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("AirNet", x, self.in_chans, self.head.weight.dtype)
        _, _, degradation = self.encoder(x)
        head = self.head(x)
        out = head
        for group in self.body:
            out = group(out, degradation)
        return self.tail(self.body_end(out) + head)

    @torch.no_grad()
    def _update_keys(self, keys: torch.Tensor) -> None:
        for q, k in zip(self.encoder.parameters(), self.key_encoder.parameters()):
            k.mul_(self.momentum).add_(q.detach(), alpha=1 - self.momentum)
        size, start = self.queue.shape[1], int(self.queue_ptr)
        index = (start + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[:, index] = keys.T
        self.queue_ptr.fill_((start + keys.shape[0]) % size)

    def auxiliary_loss(self, lq: torch.Tensor) -> torch.Tensor:
        """The MoCo degradation loss (Li et al., Sec. 3.1): two crops of each degraded input, the
        top-left quarter as the query and the bottom-right quarter as its positive key,
        cross-entropy to the positive against the queue of earlier keys."""
        h, w = lq.shape[-2] // 2, lq.shape[-1] // 2
        logits = self.contrastive_logits(lq[..., :h, :w], lq[..., h:2 * h, w:2 * w])
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=lq.device))

    def contrastive_logits(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """MoCo logits (B, 1 + queue) of the query crops against their key crops (column 0) and the
        queue; train with cross-entropy to class 0."""
        q = F.normalize(self.encoder(query)[1], dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_encoder(key)[1], dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.clone()], 1) / self.temperature
        self._update_keys(k)
        return logits


@register_model(paper="AirNet", paper_input=(1, 1, 224, 224))
def airnet(**kwargs) -> AirNet:
    return AirNet(**kwargs)


@register_model
def airnet_tiny(**kwargs) -> AirNet:
    return AirNet(**{"features": 10, "groups": 1, "blocks": 2, "queue": 16, "embed_dim": 32, **kwargs})
