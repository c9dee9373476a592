"""Effective receptive field (Restore-RWKV, Fig. 6; Ding et al., RepLKNet): how strongly each input
pixel influences the centre output pixel, measured as the mean over N test images of the ReLU'd
gradient of the centre output with respect to the input (kept per image, so that its spread over
images can be reported). Compute only; the figure is drawn by
``benchmark.render``."""
from __future__ import annotations

import numpy as np
import torch

from benchmark.harness.inference import TaskData, restore


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of a (..., H, W) tensor (the whole image if smaller)."""
    h, w = image.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return image[..., top:top + size, left:left + size]


def erf_maps(model: torch.nn.Module, config: dict, device: torch.device) -> np.ndarray:
    """(images, size, size) float32 maps, one per test image (the first ``erf.images`` of the run's
    first task): relu(d out[centre] / d input). Their mean is the ERF; their spread says how much
    it depends on the image."""
    model.eval()
    data = TaskData(config, "test", None)
    count = min(config["erf"]["images"], data.sizes[0])
    maps = []
    for index in range(count):
        _, sample = data.item(index)
        x = centre_crop(sample["lq"][None], config["erf"]["size"]).to(device).requires_grad_(True)
        out = restore(model, x, torch.zeros(1, dtype=torch.long, device=device))
        h, w = out.shape[-2:]
        (grad,) = torch.autograd.grad(out[0, 0, h // 2, w // 2], x)
        maps.append(torch.relu(grad[0, 0]).float().cpu().numpy())
    return np.stack(maps)
