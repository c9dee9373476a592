"""RAT, the Region Attention Transformer (Yang et al., *Region Attention Transformer for Medical Image
Restoration*, MICCAI 2024), as its authors' ``Model_RAT.py`` builds it (repository
Yaziwel/Region-Attention-Transformer-for-Medical-Image-Restoration; default configuration,
15,945,025 parameters).

A NAFNet U-Net: a 3x3 conv; two encoder levels of NAFBlocks (width 64, 128), each followed by a
2x2 stride-2 conv; at 1/4 resolution (256 channels) four Blocks of three layers, each layer::

    x = x + lambda_ra * RegionAttention(LN(x), regions);  x = x + MLP(LN(x))
    x = x + lambda_wa * WindowAttention(LN(x));            x = x + MLP(LN(x))

and a 3x3 conv with a skip over the Block; a skip over the four Blocks; the decoder (1x1 conv +
pixel shuffle, the encoder's features added, NAFBlocks); a 3x3 conv, added to the input.
RegionAttention is full multi-head attention over every token of the 1/4-resolution map, with
-1000 added to the logits of token pairs in different regions; WindowAttention is plain
(unshifted) attention in 4x4 windows. Both scale the logits by ``heads ** -0.5``, as the authors
do. LN is a channel LayerNorm (eps 1e-6). ``lambda_ra`` and ``lambda_wa`` start at 0.

**Regions.** ``forward(x, task=None, regions=None)``: ``regions`` is an indexed mask per image
(B, H, W) of non-negative integers (the authors use Segment Anything's masks), down-sampled to 1/4
by nearest neighbour as they do. The harness passes the masks of a prepared dataset whose source
had a ``regions/`` folder (``python -m benchmark.data prepare pet_synthesis --src pairs/``, with
``pairs/regions/`` beside ``hq/`` and ``lq/``). Where none is given, the model derives regions from the input
itself: the image is averaged over 4x4 cells (the attention's resolution) and each cell is labelled
by the quartile of its intensity within the image (``fallback_regions`` intensity classes, equal
numbers of cells each), a classical intensity clustering that needs no weights. This differs from the
paper, whose regions are semantic (organs and tissues from SAM): intensity classes group tissue of
similar value wherever it lies, and say nothing about anatomy.

Differences from the authors' module, without effect on the outputs: any H, W work (the input and
the mask are padded by reflection / replication to a multiple of 16, the window attention's need,
and the output is cropped back); their unused ``CAB`` / ``ChannelAttention`` classes are not
built; the region mask is computed by comparing labels (the same -1000 / 0 mask as their
``correlation_mask_oneBYone``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._contract import RestorationModel
from ._input import check_image, pad_image
from ._registry import register_model
from .ops._tracing import untraced

MASK_VALUE = -1000.0          # the authors' logit offset between regions


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class NAFBlock(nn.Module):
    """NAFNet's block: LN, 1x1 conv, 3x3 depth-wise conv, simple gate, simplified channel attention,
    1x1 conv (scaled by beta); LN, 1x1 conv, simple gate, 1x1 conv (scaled by gamma)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm1, self.norm2 = LayerNorm2d(c), LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv3 = nn.Conv2d(c, c, 1)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self._gate(self.conv2(self.conv1(self.norm1(inp))))
        y = inp + self.conv3(x * self.sca(x)) * self.beta
        return y + self.conv5(self._gate(self.conv4(self.norm2(y)))) * self.gamma


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class RegionAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.project_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:    # mask: (B, L, L)
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w).transpose(2, 3).contiguous()
                   for t in self.qkv(x).chunk(3, dim=1))                       # (B, heads, L, c / heads)
        # softmax(q k^T * heads^-0.5 + mask) v, the authors' attention, by PyTorch's fused kernel: it
        # works through the keys in blocks instead of holding the (B, heads, L, L) logits, 8.6 GB for
        # one 512x512 CT slice (L = 128^2 at 1/4 resolution; the explicit product took ~18 GB). The
        # kernel needs rows of q, k, v contiguous (else PyTorch falls back to the explicit product)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=self.heads ** -0.5)
        return self.project_out(out.transpose(2, 3).reshape(b, c, h, w))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.window
        windows = (x.permute(0, 2, 3, 1).reshape(b, h // s, s, w // s, s, c).transpose(2, 3)
                   .reshape(-1, s * s, c))                                       # (B * nW, s * s, C)
        n = windows.shape[0]
        q, k, v = self.qkv(windows).reshape(n, s * s, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = ((q @ k.transpose(-2, -1) * self.heads ** -0.5).softmax(-1) @ v).transpose(1, 2).reshape(n, s * s, c)
        out = self.proj_out(out).reshape(b, h // s, w // s, s, s, c).transpose(2, 3).reshape(b, h, w, c)
        return out.permute(0, 3, 1, 2)


class RegionWindowLayer(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float):
        super().__init__()
        self.norm_ra, self.norm_ra_mlp = LayerNorm2d(dim), LayerNorm2d(dim)
        self.ra, self.mlp_ra = RegionAttention(dim, heads), MLP(dim, int(dim * mlp_ratio))
        self.lambda_ra = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.norm_wa, self.norm_wa_mlp = LayerNorm2d(dim), LayerNorm2d(dim)
        self.wa, self.mlp_wa = WindowAttention(dim, heads, window), MLP(dim, int(dim * mlp_ratio))
        self.lambda_wa = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.lambda_ra * self.ra(self.norm_ra(x), mask)
        x = x + self.mlp_ra(self.norm_ra_mlp(x))
        x = x + self.lambda_wa * self.wa(self.norm_wa(x))
        return x + self.mlp_wa(self.norm_wa_mlp(x))


class RegionBlock(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int, window: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(RegionWindowLayer(dim, heads, window, mlp_ratio) for _ in range(layers))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shortcut = x
        for layer in self.layers:
            x = layer(x, mask)
        return self.conv(x) + shortcut


def region_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, h, w) region labels -> the (B, h * w, h * w) logit offsets: 0 within a region,
    ``MASK_VALUE`` across regions."""
    flat = labels.reshape(labels.shape[0], -1)
    same = flat[:, :, None] == flat[:, None, :]
    return torch.where(same, 0.0, MASK_VALUE)


@torch.no_grad()
def intensity_regions(x: torch.Tensor, cell: int, classes: int) -> torch.Tensor:
    """The fallback regions: ``x`` (B, 1, H, W) averaged over ``cell`` x ``cell`` cells, each cell
    labelled by the intensity class (``classes`` equal-count quantile bins of its image) it falls in."""
    cells = F.avg_pool2d(x.mean(1, keepdim=True), cell)[:, 0]                  # (B, H / cell, W / cell)
    flat = cells.reshape(cells.shape[0], -1)
    levels = torch.linspace(0, 1, classes + 1, dtype=flat.dtype, device=flat.device)[1:-1]
    edges = torch.quantile(flat, levels, dim=1).T.contiguous()                 # (B, classes - 1)
    return torch.searchsorted(edges, flat.contiguous(), right=True).reshape(cells.shape)


class RAT(RestorationModel):
    takes_regions = True                      # the harness passes the data's region masks when it has them

    def __init__(self, in_chans: int = 1, width: int = 64, middle_blocks: int = 12,
                 enc_blocks: Sequence[int] = (2, 2), dec_blocks: Sequence[int] = (2, 2), layers_per_block: int = 3,
                 heads: int = 8, window: int = 4, mlp_ratio: float = 2.0, fallback_regions: int = 4):
        super().__init__()
        if len(enc_blocks) != len(dec_blocks) or middle_blocks < layers_per_block or fallback_regions < 1:
            raise ValueError(f"RAT needs as many decoder as encoder levels, middle_blocks >= layers_per_block and "
                             f"fallback_regions >= 1; got enc_blocks={list(enc_blocks)}, dec_blocks={list(dec_blocks)}, "
                             f"middle_blocks={middle_blocks}, layers_per_block={layers_per_block}, "
                             f"fallback_regions={fallback_regions}")
        if (width * 2 ** len(enc_blocks)) % heads:
            raise ValueError(f"RAT: the bottleneck width {width * 2 ** len(enc_blocks)} must be divisible by heads={heads}")
        self.in_chans = in_chans
        self.scale = 2 ** len(enc_blocks)                   # the attention's resolution: 1 / scale
        self.window = window
        self.fallback_regions = fallback_regions
        self.intro = nn.Conv2d(in_chans, width, 3, padding=1)
        self.ending = nn.Conv2d(width, in_chans, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        chan = width
        for count in enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(count)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.ModuleList(RegionBlock(layers_per_block, chan, heads, window, mlp_ratio)
                                         for _ in range(middle_blocks // layers_per_block))
        for count in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(count)]))

    def _mask(self, x: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
        """The region mask at the attention's resolution, for the padded input ``x``. Not part of the
        network's MACs (the paper's regions come from SAM, outside the model): hidden from tracers."""
        with untraced(), torch.no_grad():
            if regions is None:
                labels = intensity_regions(x, self.scale, self.fallback_regions)
            else:
                h, w = x.shape[2:]
                padded = F.pad(regions[:, None].float(), (0, w - regions.shape[2], 0, h - regions.shape[1]),
                               mode="replicate")
                labels = F.interpolate(padded, scale_factor=1 / self.scale, mode="nearest")[:, 0].long()
            return region_mask(labels).to(x.dtype)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None,
                regions: torch.Tensor | None = None) -> torch.Tensor:
        check_image("RAT", x, self.in_chans, self.intro.weight.dtype)
        if regions is not None and (regions.dim() != 3 or regions.shape[0] != x.shape[0] or regions.shape[1:] != x.shape[2:]
                                    or regions.dtype.is_floating_point or bool((regions < 0).any())):
            raise ValueError(f"RAT: regions must be a (B, H, W) tensor of non-negative integer labels for the batch "
                             f"{tuple(x.shape)}; got {tuple(regions.shape)} {regions.dtype}")
        height, width = x.shape[2:]
        inp = pad_image(x, self.scale * self.window)
        mask = self._mask(inp, regions)
        y = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            y = encoder(y)
            skips.append(y)
            y = down(y)
        shortcut = y
        for block in self.middle_blks:
            y = block(y, mask)
        y = y + shortcut
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            y = decoder(up(y) + skip)
        return (self.ending(y) + inp)[:, :, :height, :width]


def convert_official_state_dict(state: dict) -> dict:
    """A state dict of the authors' ``RAT`` -> one that ours loads. Our modules carry the authors'
    names (``intro``, ``encoders``, ``downs``, ``middle_blks.{i}.layers.{j}.ra.qkv``, ...), so this
    only unwraps a ``state_dict`` / ``model`` / ``params`` wrapper and removes DataParallel's
    ``module.`` prefix; ``load_state_dict`` then names any key of another variant."""
    for wrapper in ("state_dict", "model", "params"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    return {key.removeprefix("module."): value for key, value in state.items()}


@register_model(converter=convert_official_state_dict)
def rat(**kwargs) -> RAT:
    """The authors' default configuration (15,945,025 parameters)."""
    return RAT(**kwargs)


@register_model(converter=convert_official_state_dict)
def rat_tiny(**kwargs) -> RAT:
    """``rat``'s parameters / ``TINY_DIVISOR``: width 10, one NAFBlock per level, one block of 3 layers,
    4 heads."""
    return RAT(**{"width": 10, "enc_blocks": (1, 1), "dec_blocks": (1, 1), "middle_blocks": 3, "heads": 4, **kwargs})
