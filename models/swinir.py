"""SwinIR (Liang et al., ICCVW 2021) for same-size restoration: a shallow conv, residual Swin
transformer blocks (RSTB: Swin layers with (shifted) window attention and a conv, in a residual),
a conv after the body with a long skip, and a reconstruction conv added to the input.

As in the paper's comparison: upscale 1, window 8, embed dim 180, 6 RSTBs of 6 layers, 6 heads,
MLP ratio 2, no up-sampler, '1conv' residual connection, img_range 1, one channel in and out.
11.4977 M parameters, 187.9274 G MACs at 1x1x128x128 (thop: convolutions, linear layers,
LayerNorms and the softmax module; not the attention matmuls). Inputs are padded by reflection to a
multiple of the window and cropped back.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._contract import RestorationModel
from ._input import check_image, pad_image
from ._registry import register_model


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, size * size, C)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def _merge(windows: torch.Tensor, size: int, b: int, h: int, w: int) -> torch.Tensor:
    x = windows.reshape(b, h // size, w // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2)
        self.register_buffer("relative_position_index", relative[..., 0] * (2 * window - 1) + relative[..., 1],
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attention = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attention = attention + bias.reshape(n, n, -1).permute(2, 0, 1)[None]
        if mask is not None:                                       # (windows, N, N): -100 across regions
            attention = attention.reshape(-1, mask.shape[0], self.heads, n, n) + mask[None, :, None]
            attention = attention.reshape(bw, self.heads, n, n)
        out = self.softmax(attention) @ v
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinLayer(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def _mask(self, h: int, w: int, shift: int, device) -> torch.Tensor:
        """Shifted windows mix regions that were not adjacent; attention between them is masked."""
        region = torch.zeros(1, h, w, 1, device=device)
        cuts = (slice(0, -self.window), slice(-self.window, -shift), slice(-shift, None))
        label = 0
        for rows in cuts:
            for cols in cuts:
                region[:, rows, cols, :] = label
                label += 1
        ids = _windows(region, self.window).squeeze(-1)             # (windows, N)
        return (ids[:, None, :] != ids[:, :, None]).float() * -100.0

    def attend(self, x: torch.Tensor, shift: int) -> torch.Tensor:
        """(Shifted-)window attention of an already normalised (B, H, W, C) map, H and W multiples
        of the window."""
        b, h, w, c = x.shape
        if shift:
            x = torch.roll(x, (-shift, -shift), (1, 2))
        mask = self._mask(h, w, shift, x.device) if shift else None
        x = _merge(self.attn(_windows(x, self.window), mask), self.window, b, h, w)
        return torch.roll(x, (shift, shift), (1, 2)) if shift else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C), H and W multiples of the window."""
        x = x + self.attend(self.norm1(x), self.shift)
        return x + self.mlp(self.norm2(x))


class RSTB(nn.Module):
    """Residual Swin transformer block: Swin layers, then a 3x3 conv, plus the block's input."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(SwinLayer(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
                                    for i in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C)."""
        out = x
        for layer in self.layers:
            out = layer(out)
        return x + self.conv(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SwinIR(RestorationModel):
    def __init__(self, in_chans: int = 1, embed_dim: int = 180, depths=(6, 6, 6, 6, 6, 6), heads=(6, 6, 6, 6, 6, 6),
                 window: int = 8, mlp_ratio: float = 2.0, img_range: float = 1.0):
        super().__init__()
        if len(depths) != len(heads) or min(depths) < 1 or window < 2 or any(embed_dim % h for h in heads):
            raise ValueError(f"SwinIR: depths and heads must pair up, window >= 2, heads divide embed_dim; "
                             f"got depths {depths}, heads {heads}, window {window}, embed_dim {embed_dim}")
        self.in_chans, self.window, self.img_range = in_chans, window, img_range
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.blocks = nn.ModuleList(RSTB(embed_dim, d, h, window, mlp_ratio) for d, h in zip(depths, heads))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, padding=1)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        check_image("SwinIR", x, self.in_chans, self.conv_first.weight.dtype)
        height, width = x.shape[2:]
        image = pad_image(x, multiple=self.window) * self.img_range     # img_range; mean 0 for 1 channel
        first = self.conv_first(image)
        features = self.patch_norm(first.permute(0, 2, 3, 1))
        for block in self.blocks:
            features = block(features)
        body = self.conv_after_body(self.norm(features).permute(0, 3, 1, 2)) + first
        out = (image + self.conv_last(body)) / self.img_range
        return out[:, :, :height, :width]


@register_model(paper="SwinIR")
def swinir(**kwargs) -> SwinIR:
    return SwinIR(**kwargs)


@register_model
def swinir_tiny(**kwargs) -> SwinIR:
    return SwinIR(**{"embed_dim": 30, "depths": (2, 2, 2), "heads": (3, 3, 3), "window": 8, **kwargs})
