"""The one timing loop of every benchmark (``profile``, ``ops``, ``scan``, ``train_step``): median and
spread of ``repeat`` calls after ``warmup`` ones, the device synchronised around each call, and the
training step that every step time means (forward, L1 loss, backward, Adam).

Benchmark scripts print these numbers; no test times anything (timings are not assertions).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

from models.ops import precision as precision_module


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], repeat: int = 3, warmup: int = 1,
               device: torch.device | str | None = None) -> dict:
    """``{"median_ms", "min_ms", "max_ms"}`` of ``repeat`` timed calls of ``fn`` after ``warmup``
    untimed ones (the first call also pays for kernel builds and caches); on CUDA also
    ``peak_mb``, the allocator's peak during the timed calls."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1; got {repeat}")
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    result = {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}
    if cuda:
        result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def training_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
                  lr: float = 1e-4, precision: str = "fp32") -> Callable[[], None]:
    """One optimisation step of ``model`` on ``x`` as a callable: forward, L1 loss to ``target``
    (``x`` itself when None: the cost does not depend on the values), backward, Adam (the
    harness's optimiser), the forward and loss under ``precision`` (``train.precision``)."""
    target = x if target is None else target
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision_module.training_autocast(precision, x.device):
            loss = (model(x) - target).abs().mean()
        loss.float().backward()
        optimizer.step()
    return step


def inference_call(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One no-grad forward of ``model`` (in eval mode) on ``x`` as a callable."""
    model.eval()

    def call() -> None:
        with torch.no_grad():
            model(x)
    return call
