"""DRMC's generator (Yang et al., all-in-one medical image restoration with dynamic routing): a
head conv, residual transformer blocks whose attention and MLP are banks of experts mixed by a
routing module, and a tail conv added to the input. The routers see the block's pooled features and
a small hidden state that is passed from router to router through the whole network (so the
routing of a block depends on the routing before it); the task is never given to the model.

Configuration of the paper's comparison (the authors' released generator): 6 blocks of 64
features; per bank 3 experts: channel attention (MDTA-like, 16 heads, then a 3x3 depth-wise conv)
and 1x1-conv MLPs of ratio 2; routers of hidden size 16 (1x1 convs, GELU, ReLU'd logits).
0.6236 M parameters, 9.9154 G MACs at 1x1x128x128.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._contract import RestorationModel
from ._input import check_image
from ._registry import register_model

ROUTER_HIDDEN = 16


class Router(nn.Module):
    """(pooled features, hidden state) -> (non-negative expert weights, new hidden state)."""

    def __init__(self, features: int, experts: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Conv2d(features + ROUTER_HIDDEN, ROUTER_HIDDEN, 1)
        self.logits = nn.Conv2d(ROUTER_HIDDEN, experts, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        state = F.gelu(self.hidden(torch.cat([self.pool(x), state], 1)))
        return torch.relu(self.logits(state)), state


class AttentionExpert(nn.Module):
    def __init__(self, features: int, heads: int = 16):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(features, 3 * features, 1, bias=False)
        self.dwconv = nn.Conv2d(features, features, 3, padding=1, groups=features, bias=False)
        self.project_out = nn.Conv2d(features, features, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in self.qkv(x).chunk(3, 1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = torch.softmax(q @ k.transpose(-2, -1) * self.temperature, dim=-1)
        return self.project_out(self.dwconv((attention @ v).reshape(b, c, h, w)))


class MLPExpert(nn.Sequential):
    def __init__(self, features: int, ratio: float):
        hidden = int(ratio * features)
        super().__init__(nn.Conv2d(features, hidden, 1), nn.GELU(), nn.Conv2d(hidden, features, 1))


class ExpertBank(nn.Module):
    """sum_e w_e(x, state) expert_e(x)."""

    def __init__(self, features: int, experts: list[nn.Module]):
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.router = Router(features, len(experts))

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        weights, state = self.router(x, state)                                 # (B, E, 1, 1)
        out = sum(weights[:, e:e + 1] * expert(x) for e, expert in enumerate(self.experts))
        return out, state


class RoutedBlock(nn.Module):
    def __init__(self, features: int, experts: int, mlp_ratio: float, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(features)
        self.attention = ExpertBank(features, [AttentionExpert(features, heads) for _ in range(experts)])
        self.norm2 = nn.LayerNorm(features)
        self.mlp = ExpertBank(features, [MLPExpert(features, mlp_ratio) for _ in range(experts)])
        self.beta = nn.Parameter(torch.ones(1, features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, features, 1, 1))

    @staticmethod
    def _norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        out, state = self.attention(self._norm(self.norm1, x), state)
        x = out + self.beta * x
        out, state = self.mlp(self._norm(self.norm2, x), state)
        return out + self.gamma * x, state


class DRMC(RestorationModel):
    def __init__(self, in_chans: int = 1, blocks: int = 6, features: int = 64, experts: int = 3, mlp_ratio: float = 2.0,
                 heads: int = 16):
        super().__init__()
        if blocks < 1 or experts < 1 or heads < 1 or features % heads:
            raise ValueError(f"DRMC needs blocks, experts, heads >= 1 and features divisible by the heads; "
                             f"got {blocks}, {experts}, {heads}, {features}")
        self.in_chans = in_chans
        self.head = nn.Conv2d(in_chans, features, 3, padding=1)
        self.body = nn.ModuleList(RoutedBlock(features, experts, mlp_ratio, heads) for _ in range(blocks))
        self.tail = nn.Conv2d(features, in_chans, 3, padding=1)
        self.initial_state = nn.Parameter(torch.ones(1, ROUTER_HIDDEN, 1, 1))

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("DRMC", x, self.in_chans, self.head.weight.dtype)
        state = self.initial_state.expand(x.shape[0], -1, -1, -1)
        out = self.head(x)
        for block in self.body:
            out, state = block(out, state)
        return self.tail(out) + x


@register_model(paper="DRMC")
def drmc(**kwargs) -> DRMC:
    return DRMC(**kwargs)


# The paper's size / 150 would be 2 blocks of 8 (4,449 parameters): at smoke scale that network does
# not learn MRI super-resolution, alone or all-in-one, at any of the steps tried (docs/calibration.md).
@register_model(widened="the paper's 6 blocks, of 16 features (34,569 parameters) where the paper's size / 150 gives "
                        "2 blocks of 8 (4,449): at that size it gains under +1.1 dB on MRI super-resolution, alone "
                        "or all-in-one (docs/calibration.md)")
def drmc_tiny(**kwargs) -> DRMC:
    return DRMC(**{"blocks": 6, "features": 16, "experts": 2, "heads": 4, **kwargs})
