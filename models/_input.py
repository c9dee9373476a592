"""Input checks and padding shared by every model: ``(B, C, H, W)`` images of the model's dtype."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_image(model: str, x, channels: int, dtype: torch.dtype) -> None:
    """A clear ``ValueError`` for anything but a non-empty (B, channels, H, W) batch of ``dtype``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{model} expects an image batch of shape (B, {channels}, H, W); got {shape}")
    if x.shape[1] != channels:
        raise ValueError(f"{model} expects {channels} input channel(s), shape (B, {channels}, H, W); "
                         f"got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise ValueError(f"{model} expects input of the model's dtype {dtype}; got {x.dtype} "
                         "(cast the input, or the model with model.to(dtype))")
    if min(x.shape[2:]) < 1 or x.shape[0] < 1:
        raise ValueError(f"{model} got an empty image batch of shape {tuple(x.shape)}")


def pad_image(x: torch.Tensor, multiple: int = 1, minimum: int = 1) -> torch.Tensor:
    """Pad the bottom and right so that H and W are multiples of ``multiple`` and at least
    ``minimum``: by reflection, or by replication where the image is too small to reflect."""
    height, width = x.shape[2:]
    target_h = max(minimum, -(-height // multiple) * multiple)
    target_w = max(minimum, -(-width // multiple) * multiple)
    pad_h, pad_w = target_h - height, target_w - width
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
