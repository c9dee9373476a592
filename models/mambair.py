"""MambaIR (Guo et al., ECCV 2024), the U-Net variant of its real-denoising code: Restormer's 4-level
U-Net with visual state-space blocks (VSSB: LayerNorm, 2D selective scan SS2D over 4 scan
directions, scaled skip; LayerNorm, channel-attention conv block CAB, scaled skip).

As in the paper's comparison: dim 48, blocks [4, 6, 6, 8], 4 refinement blocks, SS2D expand 2,
dt_rank ceil(C / 16) and d_state C / 12 per level (4, 8, 16, 32; the decoder's level 1 and the
refinement at 96 channels: 8), CAB compress 3 / squeeze 30, convolutions without bias outside the
blocks; one channel in and out. (MambaIR's released super-resolution code uses expand 1.5 and
d_state 16; the paper's numbers are reproduced by the U-Net denoising configuration used here.) 31.5035 M parameters, 34.3491 G MACs at 1x1x128x128 (thop:
convolutions, linear layers, LayerNorms, the channel attention's average pooling; the scan and its
einsum projections are not modules). The selective scan runs ``mamba_ssm``'s CUDA kernel on a GPU where
it is installed, the compiled CPU kernel on a CPU (``models.ops.selective_scan``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from ._unet import RestormerUNet
from .ops.backends import KernelChoice
from .ops.selective_scan import selective_scan

SCANS = 4  # row-major, column-major, and both reversed


class SS2D(nn.Module):
    """2D selective scan: project, depth-wise conv + SiLU, scan the map in 4 directions with
    input-dependent (delta, B, C), merge, LayerNorm, gate with SiLU(z), project back."""

    def __init__(self, dim: int, d_state: int, expand: float = 2.0, d_conv: int = 3):
        super().__init__()
        inner = int(expand * dim)
        self.d_state, self.dt_rank = d_state, math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner)
        self.x_proj_weight = nn.Parameter(torch.empty(SCANS, self.dt_rank + 2 * d_state, inner))
        nn.init.uniform_(self.x_proj_weight, -inner ** -0.5, inner ** -0.5)
        std = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(SCANS, inner, self.dt_rank).uniform_(-std, std))
        # delta bias: softplus^-1 of a log-uniform step in [1e-3, 0.1] (Mamba's initialisation)
        dt = torch.exp(torch.rand(SCANS, inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(SCANS * inner, 1))
        self.Ds = nn.Parameter(torch.ones(SCANS * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.kernel = KernelChoice("scan")                                  # set_backends / used_backends

    def _scan(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D, H, W) -> the 4 scans merged back to (B, D, H * W)."""
        b, d, h, w = x.shape
        length = h * w
        rows, cols = x.reshape(b, d, length), x.transpose(2, 3).reshape(b, d, length)
        xs = torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], 1)                      # (B, 4, D, L)
        projected = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = projected.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = selective_scan(xs.reshape(b, -1, length), dts.reshape(b, -1, length), -torch.exp(self.A_logs.float()),
                           Bs, Cs, self.Ds.float(), self.dt_projs_bias.reshape(-1).float(), delta_softplus=True,
                           backend=self.kernel.backend, record=self.kernel)
        y = y.reshape(b, SCANS, d, length).to(x.dtype)
        backwards = y[:, 2:].flip(-1)
        as_rows = lambda t: t.reshape(b, d, w, h).transpose(2, 3).reshape(b, d, length)   # noqa: E731
        return y[:, 0] + backwards[:, 0] + as_rows(y[:, 1]) + as_rows(backwards[:, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C)."""
        b, h, w, _ = x.shape
        inner, gate = self.in_proj(x).chunk(2, dim=-1)
        inner = F.silu(self.conv2d(inner.permute(0, 3, 1, 2)))
        y = self._scan(inner).transpose(1, 2).reshape(b, h, w, -1)
        return self.out_proj(self.out_norm(y) * F.silu(gate))


class CAB(nn.Module):
    """Channel-attention block (RCAN): conv, GELU, conv, then a squeeze-excitation gate."""

    def __init__(self, dim: int, compress: int = 3, squeeze: int = 30):
        super().__init__()
        hidden, squeezed = dim // compress, max(1, dim // squeeze)
        self.body = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, dim, 3, padding=1))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, squeezed, 1), nn.ReLU(),
                                  nn.Conv2d(squeezed, dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        return features * self.gate(features)


class VSSBlock(nn.Module):
    def __init__(self, dim: int, d_state: int, expand: float):
        super().__init__()
        self.ln_1, self.self_attention = nn.LayerNorm(dim), SS2D(dim, d_state, expand)
        self.skip_scale = nn.Parameter(torch.ones(dim))
        self.ln_2, self.conv_blk = nn.LayerNorm(dim), CAB(dim)
        self.skip_scale2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W)."""
        tokens = x.permute(0, 2, 3, 1)
        tokens = tokens * self.skip_scale + self.self_attention(self.ln_1(tokens))
        local = self.conv_blk(self.ln_2(tokens).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return (tokens * self.skip_scale2 + local).permute(0, 3, 1, 2)


class MambaIRUNet(RestormerUNet):
    def __init__(self, in_chans: int = 1, out_chans: int = 1, dim: int = 48, num_blocks: Sequence[int] = (4, 6, 6, 8),
                 num_refinement_blocks: int = 4, expand: float = 2.0, state_divisor: int = 12):
        if dim % state_divisor:
            raise ValueError(f"MambaIRUNet needs dim divisible by {state_divisor} (d_state = C / {state_divisor}); "
                             f"got {dim}")

        def stage(level: int, channels: int, depth: int) -> nn.Sequential:
            return nn.Sequential(*[VSSBlock(channels, channels // state_divisor, expand) for _ in range(depth)])

        super().__init__("MambaIRUNet", in_chans, out_chans, dim, num_blocks, num_refinement_blocks, stage)


@register_model(paper="MambaIR", ops=("scan",))
def mambair(**kwargs) -> MambaIRUNet:
    return MambaIRUNet(**kwargs)


@register_model(ops=("scan",))
def mambair_tiny(**kwargs) -> MambaIRUNet:
    return MambaIRUNet(**{"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, "state_divisor": 4, **kwargs})
