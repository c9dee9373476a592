"""Token shifts: mix each token with its neighbours before the K / V / R projections.

All shifts take and return channels-last feature maps ``(B, H, W, C)``, and return one tensor per
projection (``n_out`` of them):

- ``UniShift`` (RWKV): the previous token of the row-major (H-scan) sequence, zero for the first,
  linearly interpolated with the current token by a learned per-channel, per-projection ratio.
- ``QuadShift`` (Vision-RWKV's Q-Shift): a quarter of the channels each from the left, right, upper
  and lower neighbour (zero at the border), then the same learned interpolation.
- ``OmniShift`` (Restore-RWKV Sec. 3.4, Eq. 11): identity plus depth-wise 1x1, 3x3, ..., kxk
  convolutions, each scaled by a learnable alpha; ``reparameterize()`` folds the branches into one
  kxk depth-wise convolution (RepVGG). All projections share the one shifted tensor.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..schema import check_choice

SHIFTS = ("uni", "quad", "omni")
OMNI_KERNELS = (1, 3, 5, 7, 9)


class _InterpolatedShift(nn.Module):
    """``x * mu_j + shifted(x) * (1 - mu_j)`` for each projection j (RWKV's learned token-shift mix)."""

    def __init__(self, dim: int, n_out: int):
        super().__init__()
        # RWKV's per-channel ramp: channel c starts with ratio c / C (some channels mostly keep the
        # current token, others mostly take the neighbour's).
        ramp = torch.arange(dim, dtype=torch.float32) / dim
        self.mix = nn.Parameter(ramp.repeat(n_out, 1))                          # (n_out, C)

    def shifted(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        neighbour = self.shifted(x)
        return [torch.lerp(neighbour, x, mu) for mu in self.mix]             # x*mu + nb*(1-mu)


class UniShift(_InterpolatedShift):
    def shifted(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        tokens = x.reshape(B, H * W, C)
        return F.pad(tokens, (0, 0, 1, -1)).reshape(B, H, W, C)             # token t <- token t-1


class QuadShift(_InterpolatedShift):
    def shifted(self, x: torch.Tensor) -> torch.Tensor:
        q = x.shape[-1] // 4  # channels per direction; any remainder channels are left unshifted
        out = x.clone()
        out[..., 0 * q:1 * q] = F.pad(x[:, :, :-1, 0 * q:1 * q], (0, 0, 1, 0))          # from the left
        out[..., 1 * q:2 * q] = F.pad(x[:, :, 1:, 1 * q:2 * q], (0, 0, 0, 1))           # from the right
        out[..., 2 * q:3 * q] = F.pad(x[:, :-1, :, 2 * q:3 * q], (0, 0, 0, 0, 1, 0))    # from above
        out[..., 3 * q:4 * q] = F.pad(x[:, 1:, :, 3 * q:4 * q], (0, 0, 0, 0, 0, 1))     # from below
        return out


def _depthwise(dim: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)


class OmniShift(nn.Module):
    """Omni-Shift with kernel ``k``. ``reparam=True``: the multi-branch training form, foldable with
    ``reparameterize()``; ``reparam=False``: a single kxk depth-wise convolution from the start."""

    def __init__(self, dim: int, n_out: int = 1, kernel: int = 5, reparam: bool = True):
        super().__init__()
        check_choice("shift_kernel", kernel, OMNI_KERNELS)
        self.n_out, self.kernel = n_out, kernel
        if reparam:
            sizes = range(1, kernel + 1, 2)                                      # 1x1, 3x3, ..., kxk
            self.branches = nn.ModuleList(_depthwise(dim, s) for s in sizes)
            self.alpha = nn.Parameter(torch.randn(1 + len(self.branches)))      # [identity, 1x1, ...]
        else:
            self.conv = _depthwise(dim, kernel)

    @property
    def is_multi_branch(self) -> bool:
        return hasattr(self, "branches")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        image = x.permute(0, 3, 1, 2)                                            # (B, C, H, W) view
        if self.is_multi_branch:
            # Eq. 11 is linear in the branch kernels, so alpha_0 x + sum_i alpha_i conv_i(x) is one
            # conv with the fused kernel: one pass instead of one per branch, same values and gradients.
            out = F.conv2d(image, self.fused_weight(), padding=self.kernel // 2, groups=image.shape[1])
        else:
            out = self.conv(image)
        return [out.permute(0, 2, 3, 1)] * self.n_out

    def fused_weight(self) -> torch.Tensor:
        """The single kxk depth-wise kernel equal to the sum of the branches: (C, 1, k, k)."""
        if not self.is_multi_branch:
            return self.conv.weight
        k = self.kernel
        dim = self.branches[0].weight.shape[0]
        identity = torch.zeros(dim, 1, k, k, dtype=self.alpha.dtype, device=self.alpha.device)
        identity[:, :, k // 2, k // 2] = 1.0
        weight = self.alpha[0] * identity
        for a, conv in zip(self.alpha[1:], self.branches):
            pad = (k - conv.kernel_size[0]) // 2                                 # zero-pad to kxk
            weight = weight + a * F.pad(conv.weight, (pad, pad, pad, pad))
        return weight

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the branches into one kxk convolution (an explicit step; idempotent)."""
        if not self.is_multi_branch:
            return
        weight = self.fused_weight().clone()
        del self.branches, self.alpha
        self.conv = _depthwise(weight.shape[0], self.kernel).to(weight)
        self.conv.weight.copy_(weight)


def build_token_shift(kind: str, dim: int, n_out: int, kernel: int = 5, reparam: bool = True) -> nn.Module:
    check_choice("shift", kind, SHIFTS)
    if kind == "omni":
        return OmniShift(dim, n_out, kernel, reparam)
    return UniShift(dim, n_out) if kind == "uni" else QuadShift(dim, n_out)
