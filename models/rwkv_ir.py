"""RWKV-IR (Du et al., *Exploring Real&Synthetic Dataset and Linear Attention in Image Restoration*),
as its authors' code builds it (YuzhenD/ReSyn: ``basicsr/archs/rwkvirv4_arch.py`` with
``basicsr/module/base/vrwkv4.py``, the ``RWKVIRv4`` of the README's training command
``train_RWKVIRv4_SR_x2.yml``: embed 192, 6 residual groups of 6 blocks, hidden rate 3,
``shift_pixel: 0``, fancy init), without an up-sampler (same-size restoration, as SwinIR here).

A SwinIR-like three-stage network: a 3x3 conv; residual groups of RWKV blocks, each group ending
in a 3x3 conv with a skip over the group; LayerNorm, a 3x3 conv and a skip over the body; a 3x3
conv to the image, added to the input. Each block (``x`` of shape (B, H, W, C))::

    x = LN0(x)                                                         (blocks of the first group)
    x = gamma1 * x + SpatialMix(LN1(x));  x = gamma2 * x + ChannelMix(LN2(x))

SpatialMix: **DC-Shift** d = scale * [1x1 conv, InstanceNorm, GELU -> 3x3 depth-wise conv,
InstanceNorm, SiLU -> 1x1 conv, InstanceNorm, GELU](x); x' = x + d; k, v, r = linear maps of x';
y = Bi-WKV(w / T, u / T, k, v) over the tokens in row-major order in even-numbered groups and in
column-major order in odd-numbered ones (what the paper calls Cross-Bi-WKV is this alternation
between groups: one direction pair per block, no second pass); out = Linear(sigmoid(r) * y + d).
ChannelMix: m = a0 x + a1 dw1x1(x) + a2 dw3x3(x) + a3 dw5x5(x) (depth-wise, learned a);
out = sigmoid(R m) * V relu(K m)^2. With ``shift_pixel: 0`` there is no token shift (no
``spatial_mix_*`` weights).

Differences from the authors' module, all without effect on the outputs: their
``spatial_decay_2`` and ``spatial_second`` (created, never used in ``forward``: they would get no
gradient) are not built, and ``convert_official_state_dict`` drops them; the WKV is our
``models.ops.wkv.bi_wkv`` (Vision-RWKV's Bi-WKV, the same formula as their CUDA kernel, on every
backend); the per-image mean subtraction is zero for one channel and is omitted. Their
``_init_weights`` draws every Linear from a truncated normal (std 0.02) and sets LayerNorms to
(1, 0), the decay / bonus to Vision-RWKV's fancy init with the group index as layer index: kept.

``checkpoint_blocks`` (on in the full preset) recomputes each block's activations in the backward
pass instead of keeping them (``torch.utils.checkpoint``): the same outputs and gradients, about a
20th of the activation memory, one more forward per step.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from ._contract import RestorationModel
from ._input import check_image
from ._registry import register_model
from .ops.backends import KernelChoice
from .ops.wkv import bi_wkv


def _fancy_decay_and_bonus(dim: int, group: int, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vision-RWKV's "fancy" init of w and u for the layer ``group`` of ``groups``."""
    ratio_0_to_1 = group / (groups - 1) if groups > 1 else 0.0
    channel = torch.arange(dim, dtype=torch.float64) / max(dim - 1, 1)
    decay = -5 + 8 * channel ** (0.7 + 1.3 * ratio_0_to_1)
    zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(dim)], dtype=torch.float64) * 0.5
    return decay.float(), (math.log(0.3) + zigzag).float()


def _conv_norm_act(conv: nn.Conv2d, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(conv, nn.InstanceNorm2d(conv.out_channels), act)


class DCShift(nn.Module):
    """1x1 conv -> 3x3 depth-wise conv -> 1x1 conv, each with InstanceNorm and an activation."""

    def __init__(self, dim: int):
        super().__init__()
        self.pointwise_in = _conv_norm_act(nn.Conv2d(dim, dim, 1), nn.GELU())
        self.depthwise = _conv_norm_act(nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False), nn.SiLU())
        self.pointwise_out = _conv_norm_act(nn.Conv2d(dim, dim, 1), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (B, C, H, W)
        return self.pointwise_out(self.depthwise(self.pointwise_in(x)))


class SpatialMix(nn.Module):
    def __init__(self, dim: int, group: int, groups: int):
        super().__init__()
        self.column_major = group % 2 == 1                         # the scan order alternates by group
        self.dc_shift = DCShift(dim)
        self.dc_scale = nn.Parameter(torch.ones(dim))
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)
        decay, bonus = _fancy_decay_and_bonus(dim, group, groups)
        self.decay, self.bonus = nn.Parameter(decay), nn.Parameter(bonus)     # w, u
        self.kernel = KernelChoice("wkv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (B, H, W, C)
        b, h, w, c = x.shape
        shift = self.dc_shift(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) * self.dc_scale
        x = x + shift
        k, v, gate = self.key(x), self.value(x), torch.sigmoid(self.receptance(x))
        if self.column_major:
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        tokens = h * w
        y = bi_wkv(self.decay / tokens, self.bonus / tokens, k.reshape(b, tokens, c), v.reshape(b, tokens, c),
                   backend=self.kernel.backend, record=self.kernel)
        y = y.reshape(b, w, h, c).transpose(1, 2) if self.column_major else y.reshape(b, h, w, c)
        return self.output(gate * y + shift)


class ChannelMix(nn.Module):
    def __init__(self, dim: int, hidden_rate: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(dim, dim, 1, groups=dim, bias=False)
        self.conv3x3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.conv5x5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, bias=False)
        self.alpha = nn.Parameter(torch.randn(4))
        self.key = nn.Linear(dim, hidden_rate * dim, bias=False)
        self.value = nn.Linear(hidden_rate * dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (B, H, W, C)
        image = x.permute(0, 3, 1, 2)
        a = self.alpha
        mixed = (a[0] * image + a[1] * self.conv1x1(image) + a[2] * self.conv3x3(image)
                 + a[3] * self.conv5x5(image)).permute(0, 2, 3, 1)
        return torch.sigmoid(self.receptance(mixed)) * self.value(torch.square(F.relu(self.key(mixed))))


class Block(nn.Module):
    def __init__(self, dim: int, group: int, groups: int, hidden_rate: int):
        super().__init__()
        self.ln0 = nn.LayerNorm(dim) if group == 0 else None
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.att = SpatialMix(dim, group, groups)
        self.ffn = ChannelMix(dim, hidden_rate)
        self.gamma1, self.gamma2 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ln0 is not None:
            x = self.ln0(x)
        x = self.gamma1 * x + self.att(self.ln1(x))
        return self.gamma2 * x + self.ffn(self.ln2(x))


class ResidualGroup(nn.Module):
    def __init__(self, dim: int, depth: int, group: int, groups: int, hidden_rate: int, checkpoint_blocks: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, group, groups, hidden_rate) for _ in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.checkpoint_blocks = checkpoint_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (B, H, W, C)
        y = x
        for block in self.blocks:
            if self.checkpoint_blocks and torch.is_grad_enabled():
                # keep only the block's input; its activations are recomputed in the backward pass
                y = torch.utils.checkpoint.checkpoint(block, y, use_reentrant=False)
            else:
                y = block(y)
        return self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) + x


class RWKVIR(RestorationModel):
    def __init__(self, in_chans: int = 1, embed_dim: int = 192, depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
                 hidden_rate: int = 3, checkpoint_blocks: bool = False):
        super().__init__()
        if not depths or min(depths) < 1 or embed_dim < 1 or hidden_rate < 1:
            raise ValueError(f"RWKV-IR needs depths >= 1 per group, embed_dim >= 1 and hidden_rate >= 1; got "
                             f"depths={list(depths)}, embed_dim={embed_dim}, hidden_rate={hidden_rate}")
        self.in_chans = in_chans
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.groups = nn.ModuleList(ResidualGroup(embed_dim, depth, i, len(depths), hidden_rate, checkpoint_blocks)
                                    for i, depth in enumerate(depths))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, padding=1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("RWKV-IR", x, self.in_chans, self.conv_first.weight.dtype)
        first = self.conv_first(x)
        tokens = self.embed_norm(first.permute(0, 2, 3, 1))
        for group in self.groups:
            tokens = group(tokens)
        body = self.norm(tokens).permute(0, 3, 1, 2)
        return x + self.conv_last(self.conv_after_body(body) + first)


# the authors' names -> ours (after "layers.{i}.residual_group.blocks.{j}.RWKV." -> "groups.{i}.blocks.{j}.")
_RENAMES = [(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.RWKV\.", r"groups.\1.blocks.\2."),
            (r"^layers\.(\d+)\.conv\.", r"groups.\1.conv."),
            (r"^patch_embed\.norm\.", "embed_norm."),
            (r"\.att\.spatial_decay$", ".att.decay"), (r"\.att\.spatial_first$", ".att.bonus"),
            (r"\.att\.conv_scale$", ".att.dc_scale"),
            (r"\.att\.conv1a3\.0\.", ".att.dc_shift.pointwise_in.0."),
            (r"\.att\.conv33\.0\.", ".att.dc_shift.depthwise.0."),
            (r"\.att\.conv1b3\.0\.", ".att.dc_shift.pointwise_out.0.")]
_UNUSED = re.compile(r"\.att\.(spatial_decay_2|spatial_second)$")     # built by the authors, never used


def convert_official_state_dict(state: dict) -> dict:
    """A state dict of the authors' ``RWKVIRv4`` (``upsampler=''``, ``shift_pixel: 0``; BasicSR
    checkpoints keep it under ``params`` or ``params_ema``) -> one that ``RWKVIR`` loads. Their
    unused ``spatial_decay_2`` / ``spatial_second`` are dropped."""
    for wrapper in ("params_ema", "params"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    converted = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if _UNUSED.search(key):
            continue
        if re.search(r"\.(spatial_mix_[kvr])$", key):
            raise ValueError(f"{key}: a checkpoint trained with shift_pixel > 0 (a token shift); this model "
                             "reproduces the shift_pixel: 0 configuration")
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


@register_model(ops=("wkv",), converter=convert_official_state_dict)
def rwkv_ir(**kwargs) -> RWKVIR:
    """The authors' SR x2 configuration (embed 192, 6 groups of 6 blocks, hidden rate 3), its blocks
    checkpointed in training: all 36 blocks run at full resolution with 192 channels (576 in the
    channel mix), so autograd keeps about 1.2 MB per pixel (5.0 GB for one 64x64 image, measured;
    about 80 GB for the paper's batch of four 128x128 crops); checkpointed, it keeps each block's
    input and recomputes one block at a time (the same gradients, one more forward)."""
    return RWKVIR(**{"checkpoint_blocks": True, **kwargs})


@register_model(ops=("wkv",), converter=convert_official_state_dict)
def rwkv_ir_tiny(**kwargs) -> RWKVIR:
    """``rwkv_ir``'s parameters / ``TINY_DIVISOR``: embed 32, 3 groups of 2 blocks."""
    return RWKVIR(**{"embed_dim": 32, "depths": (2, 2, 2), **kwargs})
